"""Help for the env overview table."""

from __future__ import annotations

from services.karn.sanctum.help.content import DiagnosticPattern, FieldHelp, PanelHelp

HELP = PanelHelp(
    panel_id="env_overview",
    title="Environment Overview",
    overview=(
        "One row per env of the run: where its episode is, its validation accuracy and reward, and what every "
        "seed slot holds right now. Select a row and press Enter or d for the env's seeds and counterfactuals."
    ),
    fields=(
        FieldHelp("env", "The env's index in the run; 0–9 select it directly."),
        FieldHelp("ep", "The episode the env is running (— before its first epoch)."),
        FieldHelp("epoch", "Epochs done in this episode, out of the episode length."),
        FieldHelp("acc", "Validation accuracy (%) after the latest epoch; bold when it is the env's best."),
        FieldHelp("best", "The best validation accuracy (%) this env has reached in the run."),
        FieldHelp("acc trend", "Sparkline of the last 10 epochs' accuracy, scaled between their min and max."),
        FieldHelp("R last", "Return of the env's last finished episode, under the arm's reward mode."),
        FieldHelp("R mean", "Mean return over the env's recent finished episodes."),
        FieldHelp("R trend", "Sparkline of the recent episode returns."),
        FieldHelp(
            "status",
            "initializing, healthy, excellent, stalled (no accuracy gain for many epochs), degraded (accuracy "
            "falling) or rollback (the governor restored the host this epoch).",
        ),
        FieldHelp("slots", "One column per slot: STAGE:blueprint of its seed, a ladder's level L k/L, or empty."),
        FieldHelp("last action", "The op the policy chose at the latest step, with its target slot."),
    ),
    diagnostics=(
        DiagnosticPattern("good", "excellent or healthy with an upward accuracy trend", "the host is learning"),
        DiagnosticPattern(
            "warning",
            "stalled for a long time",
            "the host has plateaued; the policy should be growing capacity",
            "check that GERMINATE is not masked and that seeds are not all pruned",
        ),
        DiagnosticPattern("warning", "a negative contribution in the env detail", "a seed interferes with the host"),
        DiagnosticPattern("critical", "degraded, or rollback", "accuracy is falling or the host diverged"),
        DiagnosticPattern(
            "critical",
            "every slot empty for many epochs",
            "the policy is stuck on WAIT",
            "check the policy's entropy in its Tamiyo panel",
        ),
    ),
    keyboard={
        "Enter / d": "env detail",
        "j / k": "next / previous env",
        "g / G": "first / last env",
        "1 … 9, 0": "select env 0 … 8, 9",
        "/": "filter rows",
    },
)
