"""Help for the env detail screen."""

from __future__ import annotations

from services.karn.sanctum.help.content import DiagnosticPattern, FieldHelp, PanelHelp

HELP = PanelHelp(
    panel_id="env_detail",
    title="Env Detail",
    overview=(
        "One env followed live: a card per seed slot, each seed's counterfactual contribution, the pair "
        "interaction matrix, the terminal Shapley values and the env's recent actions."
    ),
    fields=(
        FieldHelp("seed card", "Slot, stage, blueprint, α, epochs in stage, parameters and gradient health."),
        FieldHelp("contribution", "Accuracy lost (pp) when the seed alone is switched off: its leave-one-out value."),
        FieldHelp("solo-on", "Accuracy (%) with only this seed on, every other seed off."),
        FieldHelp("interaction", "Pair term: on-together minus the two singles, in pp (positive = synergy)."),
        FieldHelp("Shapley", "Terminal Shapley value of each seed, with its standard deviation when estimated."),
        FieldHelp("recent actions", "The env's last 8 ops with their targets."),
    ),
    diagnostics=(
        DiagnosticPattern("good", "positive contributions on blending seeds", "the seeds earn their place"),
        DiagnosticPattern("warning", "negative interaction between two seeds", "they compete for the same job"),
        DiagnosticPattern(
            "critical",
            "a negative contribution on a fossilizing seed",
            "the host would be better without it",
            "check why the gate let it through",
        ),
    ),
    keyboard={"Esc / q / d": "back to the main screen", "?": "this help"},
)
