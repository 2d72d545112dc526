"""The anomaly strip: ALL CLEAR, or what needs an operator's eye (reference/tolaria_karn.md §9.2)."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from services.karn.snapshot import Anomalies

LABELS = (
    ("stalled", "stalled env"),
    ("degraded", "degraded env"),
    ("vanishing", "vanishing grads"),
    ("exploding", "exploding grads"),
    ("rollbacks", "governor rollback"),
    ("ppo_issues", "PPO issue (entropy collapse / KL)"),
    ("load_failures", "policy load failure"),
    ("refusals", "refused mutation"),
    ("undecodable", "undecodable message"),
)


class AnomalyStrip(Static):
    """Counts of every anomaly kind, or ALL CLEAR; `problem` (unknown run, no bus) takes the whole strip."""

    anomalies: reactive[Anomalies] = reactive(Anomalies)
    problem: reactive[str] = reactive("")

    def watch_problem(self, problem: str) -> None:
        self.set_class(bool(problem), "-problem")

    def watch_anomalies(self, anomalies: Anomalies) -> None:
        self.set_class(not anomalies.all_clear, "-alert")

    def render(self) -> Text:
        if self.problem:
            return Text(f" ✖ {self.problem}", style="bold")
        found = [(getattr(self.anomalies, name), label) for name, label in LABELS if getattr(self.anomalies, name)]
        if not found:
            return Text(" ✔ ALL CLEAR", style="bold green")
        text = Text(" ⚠ ", style="bold yellow")
        for i, (count, label) in enumerate(found):
            if i:
                text.append("  ·  ")
            text.append(f"{count} {label}{'s' if count != 1 else ''}", style="bold")
        return text
