"""Counterfactual contributions as a waterfall from all-seeds-off to the full model, with Shapley values if known."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from services.karn.sanctum.cells import percent, signed
from services.karn.snapshot import EnvDetail

BAR_WIDTH = 16


def _bar(value: float, scale: float) -> Text:
    cells = 0 if scale <= 0 else min(BAR_WIDTH, round(abs(value) / scale * BAR_WIDTH))
    return Text("█" * cells, style="green" if value >= 0 else "red")


class CounterfactualPanel(Static):
    """Each live seed's contribution (accuracy with it minus without it) from the latest fused validation."""

    can_focus = True
    detail: reactive[EnvDetail | None] = reactive(None)

    def render(self) -> Group | Text:
        d = self.detail
        if d is None:
            return Text("no data", style="dim")
        measured = [(c.slot_id, c.contribution) for c in d.seeds if c.occupied and c.contribution is not None]
        table = Table(title="Counterfactual contributions", title_justify="left", box=None, expand=True)
        table.add_column("", no_wrap=True)
        table.add_column("Δ acc", justify="right", no_wrap=True)
        table.add_column("", no_wrap=True)
        scale = max((abs(v) for _, v in measured), default=0.0)
        table.add_row("all seeds off", percent(d.all_off_accuracy), "")
        for slot_id, value in measured:
            table.add_row(f"  {slot_id}", signed(value, 2), _bar(value, scale))
        table.add_row(Text("all seeds on", style="bold"), percent(d.accuracy), "")
        if not measured:
            table.add_row(Text("no seed measured this epoch", style="dim"), "", "")
        parts: list[Table | Text] = [table]
        if d.shapley:
            shapley = Table(title=f"Shapley (episode {d.shapley_episode})", title_justify="left", box=None, expand=True)
            shapley.add_column("slot", no_wrap=True)
            shapley.add_column("φ", justify="right", no_wrap=True)
            shapley.add_column("± std", justify="right", no_wrap=True)
            for slot_id, value, std in d.shapley:
                shapley.add_row(slot_id, signed(value, 2), "—" if std is None else f"{std:.2f}")
            parts.append(shapley)
        if not d.from_steps:
            parts.append(Text("(from telemetry only: no step records seen for this env)", style="dim"))
        return Group(*parts)
