"""Help for a policy line's Tamiyo panel; its colour rules come from `thresholds`."""

from __future__ import annotations

from services.karn.sanctum import thresholds as T
from services.karn.sanctum.help.content import DiagnosticPattern, FieldHelp, PanelHelp

HELP = PanelHelp(
    panel_id="tamiyo",
    title="Tamiyo",
    overview=(
        "One panel per policy line that decides in this run: its version, what it chooses, how uncertain each "
        "action head is, and the statistics of its latest PPO update (learned lines only)."
    ),
    fields=(
        FieldHelp("decisions", "Steps this line has decided in the run; the bars are the share of each op."),
        FieldHelp("entropy", "Mean entropy per action head over the line's recent decisions (or the update's)."),
        FieldHelp(
            "PPO",
            "PPO updates applied to this line; 'waiting for first update' until the first one "
            "(a fixed policy never has one).",
        ),
        FieldHelp("Lp", "Policy loss of the latest update (the clipped surrogate, negated)."),
        FieldHelp("Lv", "Value loss of the latest update."),
        FieldHelp("H", "Mean policy entropy of the latest update.", T.ENTROPY.color_rules()),
        FieldHelp("KL", "Approximate KL divergence of the update from the acting policy.", T.APPROX_KL.color_rules()),
        FieldHelp("clip", "Share of samples whose ratio PPO clipped.", T.CLIP_FRACTION.color_rules()),
        FieldHelp("EV", "Explained variance of the critic on the batch's returns.", T.EXPLAINED_VARIANCE.color_rules()),
        FieldHelp(
            "version lag",
            "How many versions the acting policy was behind the learner (0 when on-policy).",
            T.VERSION_LAG.color_rules(),
        ),
        FieldHelp("load failed", "The last weights this line could not load, and why (shown only then)."),
        FieldHelp("LSTM", "Badge: the line trains the factored recurrent actor-critic (from its latest update)."),
        FieldHelp("XFMR", "Badge: the line trains the slot-transformer policy (tamiyo4)."),
        FieldHelp("attn", "The slot transformer's CLS attention mass on each slot (shown only for XFMR lines)."),
    ),
    diagnostics=(
        DiagnosticPattern(
            "good", f"entropy steady within {T.ENTROPY.warn:g}–0.7", "the policy still explores while it improves"
        ),
        DiagnosticPattern(
            "good", f"KL below {T.APPROX_KL.warn:g} while returns improve", "updates are small and useful"
        ),
        DiagnosticPattern(
            "warning",
            f"WAIT above {T.WAIT_DOMINANCE:.0%} of decisions",
            "the reward may be punishing action",
            "compare the reward components of episodes with and without germinations",
        ),
        DiagnosticPattern(
            "warning", "GERMINATE → PRUNE cycles", "seeds are judged too early", "give seeds longer to prove themselves"
        ),
        DiagnosticPattern(
            "critical",
            f"entropy below {T.ENTROPY.critical:g} with low accuracy",
            "the policy has collapsed",
            "raise the entropy coefficient",
        ),
        DiagnosticPattern(
            "critical",
            f"KL above {T.APPROX_KL.critical:g}",
            "updates are too large",
            "lower the LR or enlarge the batch",
        ),
        DiagnosticPattern(
            "critical",
            f"EV at or below {T.EXPLAINED_VARIANCE.critical:g}",
            "the critic explains nothing",
            "check the reward scale and the critic",
        ),
    ),
    keyboard={"Tab": "next panel", "?": "this help"},
)
