"""The interaction matrix of the env's slots: pairwise interaction terms, contributions on the diagonal."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from services.karn.snapshot import EnvDetail


def _cell(value: float | None) -> Text:
    if value is None:
        return Text("·", style="dim")
    style = "green" if value > 0 else "red" if value < 0 else ""
    return Text(f"{value:+.2f}", style=style)


class InteractionMatrix(Static):
    """Slot × slot: I(a, b) = acc(a, b on) − acc(a on) − acc(b on) + acc(all off), as Tolaria measured it."""

    can_focus = True
    detail: reactive[EnvDetail | None] = reactive(None)

    def render(self) -> Table | Text:
        d = self.detail
        if d is None:
            return Text("no data", style="dim")
        slots = [c.slot_id for c in d.seeds]
        pairs: dict[tuple[str, str], float] = {}
        for a, b, value in d.interactions:
            pairs[(a, b)] = pairs[(b, a)] = value
        contributions = {c.slot_id: c.contribution for c in d.seeds if c.occupied}
        table = Table(title="Interactions", title_justify="left", box=None, expand=True)
        table.add_column("", no_wrap=True)
        for slot in slots:
            table.add_column(slot, justify="right", no_wrap=True)
        for a in slots:
            table.add_row(a, *(_cell(contributions.get(a)) if a == b else _cell(pairs.get((a, b))) for b in slots))
        if not d.interactions:
            table.caption = "no pair measured (needs two live seeds)"
        return table
