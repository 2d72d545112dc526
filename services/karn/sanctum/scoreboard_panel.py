"""The scoreboard: best episodes by peak accuracy, worst regressions from peak, and Pareto reward health."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from services.karn.sanctum.cells import number, percent, signed
from services.karn.snapshot import EpisodeScore, Scoreboard


def _trend(score: EpisodeScore) -> Text:
    if score.regression > 0.5:
        return Text("↘", style="red")
    return Text("→", style="green") if score.regression <= 0 else Text("↘", style="yellow")


def _table(title: str, scores: tuple[EpisodeScore, ...], worst: bool) -> Table:
    """Best runs show the parameter growth; worst regressions show the drop from peak instead."""
    table = Table(title=title, title_justify="left", expand=True, box=None, padding=(0, 1), header_style="bold")
    columns = ("env", "ep", "@", "peak", "drop" if worst else "", "final", "R" if worst else "×par")
    for column in columns:
        table.add_column(column, justify="left" if column in ("", "env") else "right", no_wrap=True)
    if not worst:
        table.add_column("R", justify="right", no_wrap=True)
    if not scores:
        table.add_row("—", *[""] * (len(table.columns) - 1))
    for s in scores:
        head = (str(s.env_id), str(s.episode) + ("" if s.finished else "*"), f"e{s.peak_epoch}", percent(s.peak))
        if worst:
            table.add_row(*head, Text(f"-{s.regression:.2f}", style="red"), percent(s.final), signed(s.end_reward, 2))
        else:
            table.add_row(*head, _trend(s), percent(s.final), number(s.growth_ratio, 3), signed(s.end_reward, 2))
    return table


class ScoreboardPanel(Static):
    """Best Runs and Worst Trajectory tables under one reward-health line."""

    can_focus = True
    board: reactive[Scoreboard] = reactive(Scoreboard)

    def render(self) -> Group:
        b = self.board
        hv = "—" if b.hypervolume is None else f"{b.hypervolume:.1f}"
        health = Text.assemble(
            ("episodes ", "dim"),
            str(b.episodes_finished),
            ("  mean final ", "dim"),
            percent(b.mean_final),
            "\n",
            ("Pareto hypervolume ", "dim"),
            (hv, "bold"),
            (f"  ({b.frontier_size} on the frontier)", "dim"),
        )
        return Group(health, _table("Best runs", b.best, False), _table("Worst regressions", b.worst, True))
