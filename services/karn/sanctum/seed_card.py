"""A seed card: one slot of the env in detail, with its seed's stage, alpha, contribution and gradients, and for a
microstructured seed its level, trend and thrash dot."""

from __future__ import annotations

from rich.console import Group
from rich.panel import Panel
from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from services.karn.sanctum.cells import STAGE_STYLES, gradient_mark, level_text, number, percent, signed
from services.karn.snapshot import SlotCell


class SeedCard(Static):
    """Renders `cell`; an empty slot is a dim card."""

    cell: reactive[SlotCell | None] = reactive(None)

    def render(self) -> Panel:
        c = self.cell
        if c is None or not c.occupied:
            slot = c.slot_id if c is not None else "?"
            return Panel(Text("empty", style="dim"), title=slot, border_style="dim")
        alpha = c.alpha or 0.0
        bar = "█" * round(alpha * 10) + "░" * (10 - round(alpha * 10))
        grads = "vanishing" if c.vanishing else "exploding" if c.exploding else "ok"
        lines = [
            Text(c.stage, style=STAGE_STYLES.get(c.stage, "bold")),
            Text.assemble(("blueprint ", "dim"), c.blueprint),
            Text.assemble(("seed ", "dim"), c.seed_id or "—"),
            Text.assemble(("alpha ", "dim"), bar, f" {alpha:.2f}"),
            Text.assemble(("in stage ", "dim"), f"{c.epochs_in_stage} epochs"),
            Text.assemble(("contribution ", "dim"), signed(c.contribution, 2)),
            Text.assemble(("solo on ", "dim"), percent(c.solo_on_accuracy)),
            Text.assemble(("interaction Σ ", "dim"), signed(c.interaction_sum, 2)),
            Text.assemble(
                ("gradients ", "dim"),
                f"{gradient_mark(c) or '·'} {grads} ",
                ("health ", "dim"),
                number(c.gradient_health, 2),
            ),
            Text.assemble(("grad ratio ", "dim"), number(c.gradient_ratio, 3)),
            Text.assemble(("params ", "dim"), f"{c.params:,}"),
        ]
        if c.microstructured:
            lines.insert(3, Text.assemble(("level ", "dim"), level_text(c)))
        return Panel(Group(*lines), title=c.slot_id, border_style=STAGE_STYLES.get(c.stage, "white"))
