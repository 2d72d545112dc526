"""Help for the run header; its freshness rule comes from the snapshot that computes it."""

from __future__ import annotations

from services.karn.sanctum.help.content import DiagnosticPattern, FieldHelp, PanelHelp
from services.karn.snapshot import LIVE_WITHIN, SLOW_WITHIN

HELP = PanelHelp(
    panel_id="run_header",
    title="Run Header",
    overview=(
        "One line about the run being shown: how fresh its data is, which run and task, the reward mode or "
        "arms, episode progress, speed and runtime, and whether it is still running."
    ),
    fields=(
        FieldHelp(
            "freshness",
            "Seconds since the newest event; REPLAY for a stored run, WAITING before any event.",
            f"green LIVE < {LIVE_WITHIN:g} s, yellow SLOW < {SLOW_WITHIN:g} s, red STALE beyond",
        ),
        FieldHelp("run", "The run id (esper runs show RUN for its spec)."),
        FieldHelp("mode", "The reward mode, or the arms of a run with several."),
        FieldHelp("episodes", "Finished episodes out of the run's total, with a progress bar."),
        FieldHelp("epochs/s", "Epochs finished per second over the run (— until two are in)."),
        FieldHelp("runtime", "Wall time since the run started."),
        FieldHelp("state", "running, completed, failed or stopped."),
    ),
    diagnostics=(
        DiagnosticPattern("good", "LIVE with epochs/s steady", "the run is flowing"),
        DiagnosticPattern(
            "warning", "SLOW or STALE while running", "no event recently", "check esper status and the service logs"
        ),
        DiagnosticPattern("critical", "state failed", "the run stopped with an error", "esper runs show RUN says why"),
    ),
)
