"""The key table (`?` where no panel help applies): generated from the app's bindings, so it cannot go stale."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from services.karn.snapshot import LIVE_WITHIN, SLOW_WITHIN

#: Keys Textual answers to on its own, shown beside the app's.
BUILT_IN_KEYS = (("Tab / Shift+Tab", "move between panels"),)
SELECT_ENV_ACTION = "select_env("


def _display(key: str) -> str:
    names = {"question_mark": "?", "slash": "/", "escape": "Esc", "f1": "F1", "enter": "Enter"}
    return " / ".join(names.get(k.strip(), k.strip()) for k in key.split(","))


def key_rows(bindings: Sequence[Binding]) -> list[tuple[str, str]]:
    """One row per binding with its description; the ten env-selecting digits share one row."""
    rows: list[tuple[str, str]] = []
    digits = [b for b in bindings if b.action.startswith(SELECT_ENV_ACTION)]
    for binding in bindings:
        if binding.action.startswith(SELECT_ENV_ACTION):
            if binding is digits[0]:
                rows.append((", ".join(b.key for b in digits), "select env 0 … 9 (1 is env 0, 0 is env 9)"))
            continue
        rows.append((_display(binding.key), binding.description))
    return [*rows, *BUILT_IN_KEYS]


class HelpScreen(ModalScreen[None]):
    """A modal list of keys; any of Esc, q or ? closes it."""

    BINDINGS = [Binding("escape,q,question_mark", "app.pop_screen", "close")]

    def __init__(self, bindings: Sequence[Binding]) -> None:
        super().__init__()
        self.rows = key_rows(bindings)

    def compose(self) -> ComposeResult:
        table = Table(title="Sanctum keys", box=None, padding=(0, 2))
        table.add_column("key", style="bold cyan", no_wrap=True)
        table.add_column("what it does")
        for key, text in self.rows:
            table.add_row(key, text)
        with Vertical(id="help-box"):
            yield Static(table)
            yield Static(
                f"Header: LIVE < {LIVE_WITHIN:g} s since the last event, SLOW < {SLOW_WITHIN:g} s, STALE beyond; "
                "REPLAY for a stored run. ? on a panel explains that panel; F1 lists them all.",
                id="help-note",
            )
