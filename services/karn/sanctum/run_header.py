"""The one-line run header: freshness, run, reward mode or arms, episode progress, epochs per second."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from services.karn.sanctum.cells import duration
from services.karn.snapshot import HeaderView

FRESHNESS_STYLES = {
    "LIVE": "bold black on green",
    "SLOW": "bold black on yellow",
    "STALE": "bold white on red",
    "REPLAY": "bold white on blue",
    "WAITING": "bold black on white",
}


class RunHeader(Static):
    """Shows `view`, or the feed's `status` while there is no run to show."""

    view: reactive[HeaderView | None] = reactive(None)
    status: reactive[str] = reactive("starting")

    def render(self) -> Text:
        view = self.view
        if view is None:
            return Text.assemble((" WAITING ", FRESHNESS_STYLES["WAITING"]), "  ", self.status)
        done, total = view.episodes_done, view.episodes_total
        filled = int(10 * done / total) if total else 0
        bar = "█" * filled + "░" * (10 - filled)
        rate = "— epochs/s" if view.epochs_per_second is None else f"{view.epochs_per_second:.2f} epochs/s"
        age = "" if view.data_age is None or view.freshness == "REPLAY" else f" ({view.data_age:.1f}s)"
        return Text.assemble(
            (f" {view.freshness} ", FRESHNESS_STYLES.get(view.freshness, "")),
            age,
            "  ",
            (view.run_id, "bold"),
            f"  {view.task}  {view.mode}  ",
            f"episodes {done}/{total} {bar}  ",
            rate,
            f"  runtime {duration(view.runtime)}  ",
            (view.state, "bold green" if view.state == "completed" else "bold"),
        )
