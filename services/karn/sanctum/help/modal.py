"""`PanelHelpModal`: one panel's help in a scrolling box (plans/karn2-sanctum-v2.md §6, Modal)."""

from __future__ import annotations

import io

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from services.karn.sanctum.help.content import SEVERITY_MARKS, PanelHelp

FIELD_WIDTH = 12
NO_HELP = "No help available for this panel."
CLOSE_HINT = "Esc, q or ? closes · j/k scroll · g/G top/bottom"


def help_title(panel: PanelHelp | None) -> str:
    return f"[?] {panel.title.upper()} HELP" if panel else "[?] HELP"


def _two_columns() -> Table:
    table = Table(box=None, show_header=False, padding=(0, 1, 0, 0), expand=True)
    table.add_column(width=FIELD_WIDTH, no_wrap=True, style="bold")
    table.add_column(ratio=1)
    return table


def render_help(panel: PanelHelp | None) -> Group | Text:
    """The modal's content: WHAT THIS SHOWS, FIELD REFERENCE (descriptions hang under their name, the colour
    rules on the next line), WHAT TO LOOK FOR (+ good, ! warning, X critical) and KEYBOARD."""
    if panel is None:
        return Text(NO_HELP, style="italic")
    parts: list[Text | Table] = [Text(help_title(panel), style="bold"), Text("")]
    parts += [Text("WHAT THIS SHOWS", style="bold cyan"), Text(panel.overview), Text("")]
    parts.append(Text("FIELD REFERENCE", style="bold cyan"))
    fields = _two_columns()
    for field in panel.fields:
        description = Text(field.description)
        if field.color_rules:
            description.append("\n" + field.color_rules, style="dim")
        fields.add_row(field.name, description)
    parts += [fields, Text(""), Text("WHAT TO LOOK FOR", style="bold cyan")]
    for d in panel.diagnostics:
        style = {"good": "green", "warning": "yellow", "critical": "bold red"}[d.severity]
        line = Text.assemble((f"{SEVERITY_MARKS[d.severity]} ", style), (f"{d.pattern}: ", "bold"), d.meaning)
        if d.action:
            line.append(f"\n  Action: {d.action}", style="dim")
        parts.append(line)
    if panel.keyboard:
        keys = _two_columns()
        for key, what in panel.keyboard.items():
            keys.add_row(key, what)
        parts += [Text(""), Text("KEYBOARD", style="bold cyan"), keys]
    return Group(*parts)


def plain_help(panel: PanelHelp | None, width: int = 72) -> str:
    """The modal's text as a terminal of `width` columns shows it (for checks and for copying)."""
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(render_help(panel))
    return console.export_text()


class PanelHelpModal(ModalScreen[None]):
    """Esc, q or ? (or a click outside the box) closes it; j/k and ↑/↓ scroll, g/G jump to top and bottom."""

    BINDINGS = [
        Binding("escape,q,question_mark", "dismiss", "close"),
        Binding("j,down", "scroll(1)", "down", show=False),
        Binding("k,up", "scroll(-1)", "up", show=False),
        Binding("g", "top", "top", show=False),
        Binding("G", "bottom", "bottom", show=False),
    ]

    def __init__(self, panel: PanelHelp | None) -> None:
        super().__init__()
        self.panel = panel

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="panel-help-box") as box:
            box.border_title = help_title(self.panel)
            box.border_subtitle = CLOSE_HINT
            yield Static(render_help(self.panel), id="panel-help-text")

    def _box(self) -> VerticalScroll:
        return self.query_one("#panel-help-box", VerticalScroll)

    def action_scroll(self, lines: int) -> None:
        box = self._box()
        box.scroll_to(y=box.scroll_y + lines, animate=False)

    def action_top(self) -> None:
        self._box().scroll_home(animate=False)

    def action_bottom(self) -> None:
        self._box().scroll_end(animate=False)

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)

    def on_click(self, event: events.Click) -> None:
        if event.widget is self:  # outside the box
            self.dismiss()
