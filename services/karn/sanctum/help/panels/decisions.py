"""Help for the decision cards."""

from __future__ import annotations

from services.karn.decision_cards import CARD_INTERVAL_SECONDS, MAX_CARDS
from services.karn.sanctum.help.content import DiagnosticPattern, FieldHelp, PanelHelp

HELP = PanelHelp(
    panel_id="decisions",
    title="Decisions",
    overview=(
        f"Up to {MAX_CARDS} recent decisions, one new card at most every {CARD_INTERVAL_SECONDS:g} s, taken in turn "
        "from the envs that decided: the op and its slot, how sure the policy was, and what it expected."
    ),
    fields=(
        FieldHelp("conf", "The policy's confidence in the chosen action (its probability, or 1 for a fixed rule)."),
        FieldHelp("H", "Mean normalised entropy over the heads the op uses (0 = certain, 1 = uniform)."),
        FieldHelp("V", "The critic's value of the state at the decision, in its normalised units."),
        FieldHelp("reward", "Always —: Simic scores whole episodes, so no per-step reward exists for Karn to show."),
        FieldHelp("forced", "Heads that had one legal value: the policy did not choose them."),
    ),
    diagnostics=(
        DiagnosticPattern("good", "varied ops with moderate H", "the policy still weighs its options"),
        DiagnosticPattern("warning", "conf near 1 on every card early in training", "the policy may have collapsed"),
        DiagnosticPattern(
            "critical", "GERMINATE then PRUNE on the same slot card after card", "churn: seeds never get to prove"
        ),
    ),
)
