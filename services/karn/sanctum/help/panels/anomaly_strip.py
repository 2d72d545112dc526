"""Help for the anomaly strip; its fields are the strip's own labels."""

from __future__ import annotations

from services.karn.sanctum.anomaly_strip import LABELS
from services.karn.sanctum.help.content import DiagnosticPattern, FieldHelp, PanelHelp

_MEANING = {
    "stalled": "envs whose accuracy has not improved for many epochs",
    "degraded": "envs whose accuracy is falling",
    "vanishing": "seeds whose gradients vanished this epoch",
    "exploding": "seeds whose gradients exploded this epoch",
    "rollbacks": "times the governor restored a host from its last good snapshot",
    "ppo_issues": "PPO updates with collapsing entropy or too large a KL",
    "load_failures": "policy weights a decider could not load",
    "refusals": "lifecycle mutations Tolaria refused to apply",
    "undecodable": "bus messages Karn could not decode (counted, never dropped silently)",
}

HELP = PanelHelp(
    panel_id="anomaly_strip",
    title="Anomaly Strip",
    overview=(
        "ALL CLEAR, or a count of everything in the run that needs an operator's eye; a problem with the feed "
        "itself (an unknown run, no bus) takes the whole strip."
    ),
    fields=tuple(FieldHelp(label, _MEANING[name]) for name, label in LABELS),
    diagnostics=(
        DiagnosticPattern("good", "ALL CLEAR", "nothing anomalous has been seen"),
        DiagnosticPattern("warning", "stalled envs or refused mutations", "look at the env and its last actions"),
        DiagnosticPattern(
            "critical", "rollbacks or exploding gradients", "training diverged somewhere", "open the env's detail"
        ),
    ),
)
