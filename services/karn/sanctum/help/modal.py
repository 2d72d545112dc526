"""`PanelHelpModal`: one panel's help in a scrolling box (plans/karn2-sanctum-v2.md §6, Modal)."""

from __future__ import annotations

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


def render_help(panel: PanelHelp | None) -> Text:
    """The modal's text: WHAT THIS SHOWS, FIELD REFERENCE, WHAT TO LOOK FOR, KEYBOARD."""
    if panel is None:
        return Text(NO_HELP, style="italic")
    text = Text()
    text.append(help_title(panel) + "\n\n", style="bold")
    text.append("WHAT THIS SHOWS\n", style="bold cyan")
    text.append(panel.overview + "\n\n")
    text.append("FIELD REFERENCE\n", style="bold cyan")
    for field in panel.fields:
        text.append(field.name.ljust(FIELD_WIDTH), style="bold")
        text.append(" " + field.description + "\n")
        if field.color_rules:
            text.append(" " * (FIELD_WIDTH + 1) + field.color_rules + "\n", style="dim")
    text.append("\nWHAT TO LOOK FOR\n", style="bold cyan")
    for d in panel.diagnostics:
        style = {"good": "green", "warning": "yellow", "critical": "bold red"}[d.severity]
        text.append(f"{SEVERITY_MARKS[d.severity]} ", style=style)
        text.append(f"{d.pattern}: ", style="bold")
        text.append(d.meaning + "\n")
        if d.action:
            text.append(f"  Action: {d.action}\n", style="dim")
    if panel.keyboard:
        text.append("\nKEYBOARD\n", style="bold cyan")
        for key, what in panel.keyboard.items():
            text.append(key.ljust(FIELD_WIDTH), style="bold")
            text.append(" " + what + "\n")
    return text


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
