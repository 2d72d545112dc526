"""The help screen: every key Sanctum answers to."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS = (
    ("q", "quit (or leave the detail screen)"),
    ("d / Enter", "detail of the selected env: seed cards, counterfactuals, interactions"),
    ("j / k", "select the next / previous env"),
    ("1 … 9, 0", "select env 0 … 8, 9"),
    ("/", "filter envs and the event log (env id, status, stage, blueprint, action)"),
    ("Esc", "clear the filter / close this screen"),
    ("Tab / Shift+Tab", "move between panels"),
    ("?", "this help"),
)


class HelpScreen(ModalScreen[None]):
    """A modal list of keys; any of Esc, q or ? closes it."""

    BINDINGS = [Binding("escape,q,question_mark", "app.pop_screen", "close")]

    def compose(self) -> ComposeResult:
        table = Table(title="Sanctum keys", box=None, padding=(0, 2))
        table.add_column("key", style="bold cyan", no_wrap=True)
        table.add_column("what it does")
        for key, text in KEYS:
            table.add_row(key, text)
        with Vertical(id="help-box"):
            yield Static(table)
            yield Static(
                "Header: LIVE < 2 s since the last event, SLOW < 5 s, STALE beyond; REPLAY for a stored run.",
                id="help-note",
            )
