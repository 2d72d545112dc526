"""`HelpIndexScreen` (F1): every registered panel by title; Enter opens its help."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from services.karn.sanctum.help.modal import PanelHelpModal
from services.karn.sanctum.help.registry import PANELS


class HelpIndexScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,f1", "app.pop_screen", "close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="help-index-box") as box:
            box.border_title = "[F1] HELP INDEX"
            yield Static("Every panel with help; Enter opens it, Esc closes.", id="help-index-note")
            yield OptionList(*(Option(p.title, id=p.panel_id) for p in PANELS.values()), id="help-index")

    def on_mount(self) -> None:
        self.query_one("#help-index", OptionList).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        panel = PANELS.get(str(event.option.id))
        self.app.push_screen(PanelHelpModal(panel))
