"""Help for the scoreboard."""

from __future__ import annotations

from services.karn.sanctum.help.content import DiagnosticPattern, FieldHelp, PanelHelp

HELP = PanelHelp(
    panel_id="scoreboard",
    title="Scoreboard",
    overview=(
        "The run's best episodes by peak accuracy and its worst regressions from peak, under the Pareto "
        "hypervolume of (final accuracy, parameter ratio): how much accuracy the run buys for its growth."
    ),
    fields=(
        FieldHelp("episodes", "Finished episodes of the run."),
        FieldHelp("mean final", "Mean final validation accuracy (%) over the finished episodes."),
        FieldHelp(
            "Pareto hypervolume", "Area dominated by the (accuracy, parameter ratio) frontier; higher is better."
        ),
        FieldHelp("peak", "The episode's best validation accuracy (%); @ is the epoch it was reached."),
        FieldHelp("final", "Validation accuracy (%) at the episode's last epoch."),
        FieldHelp("×par", "Total parameters over the host's: the growth the episode paid for."),
        FieldHelp("drop", "How far the episode fell from its peak (percentage points)."),
        FieldHelp("R", "The episode's return under its reward mode; * marks an episode still running."),
    ),
    diagnostics=(
        DiagnosticPattern("good", "high accuracy with little growth", "capacity was bought where it paid"),
        DiagnosticPattern("good", "the same blueprints across the top runs", "the policy found a consistent recipe"),
        DiagnosticPattern(
            "warning", "growth above 2.0× without an accuracy gain", "parameters are added that do not earn their keep"
        ),
        DiagnosticPattern(
            "warning",
            "every top run from early episodes",
            "learning has regressed",
            "compare the policy versions that decided them",
        ),
    ),
    keyboard={"Tab": "next panel"},
)
