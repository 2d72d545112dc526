"""Help for the event log."""

from __future__ import annotations

from services.karn.sanctum.help.content import DiagnosticPattern, FieldHelp, PanelHelp

HELP = PanelHelp(
    panel_id="event_log",
    title="Event Log",
    overview=(
        "The newest 200 lines of Karn's live log for this run: lifecycle changes, gates, rollbacks, refusals, "
        "policy updates and episode outcomes, filtered with / like the env table."
    ),
    fields=(
        FieldHelp("time", "When Karn received the event (local clock)."),
        FieldHelp("env", "envN epN eNNN: the env, episode and epoch the line is about."),
        FieldHelp("message", "What happened, in the words of the live log."),
    ),
    diagnostics=(
        DiagnosticPattern("good", "GERMINATED → … → FOSSILIZED sequences", "seeds complete their lifecycle"),
        DiagnosticPattern("warning", "gate … failed repeatedly for one slot", "a seed cannot pass its gate"),
        DiagnosticPattern("critical", "ROLLBACK lines", "the governor restored a host", "open that env's detail"),
    ),
    keyboard={"/": "filter lines", "Esc": "clear the filter"},
)
