"""RunInfo (`i`): every field of the run's spec, untruncated, in a scrolling box (plans/karn2-sanctum-v2.md §7)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from services.karn.snapshot import RunInfo


def render_run_info(info: RunInfo | None) -> Table | Text:
    if info is None or not info.fields:
        return Text("No run information received yet.", style="italic")
    table = Table(title=f"{info.run_id} · from {info.source}", box=None, show_header=False, expand=True)
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column(overflow="fold", ratio=1)
    for name, value in info.fields:
        table.add_row(name, value)
    return table


class RunInfoScreen(ModalScreen[None]):
    """Esc, q or i closes it; j/k scroll."""

    BINDINGS = [
        Binding("escape,q,i", "app.pop_screen", "close"),
        Binding("j,down", "scroll(1)", "down", show=False),
        Binding("k,up", "scroll(-1)", "up", show=False),
    ]

    def __init__(self, info: RunInfo | None) -> None:
        super().__init__()
        self.info = info

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="run-info-box") as box:
            box.border_title = "RUN INFO"
            box.border_subtitle = "Esc, q or i closes"
            yield Static(render_run_info(self.info), id="run-info-text")

    def action_scroll(self, lines: int) -> None:
        box = self.query_one("#run-info-box", VerticalScroll)
        box.scroll_to(y=box.scroll_y + lines, animate=False)
