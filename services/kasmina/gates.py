"""Quality gates G0–G3 and G5 guarding each lifecycle advance, strict or permissive (reference/kasmina.md §1.3)."""

from __future__ import annotations

from dataclasses import dataclass, field

from leyline_schemas.enums import AlphaMode, BlueprintAction, GateLevel, SeedStage
from leyline_schemas.lifecycle import SlotState
from services.kasmina.alpha import ALPHA_EPSILON

DEFAULT_MIN_TRAINING_IMPROVEMENT = 0.5  # pp, strict G2
DEFAULT_MIN_BLENDING_EPOCHS = 10  # G2 both modes, strict G3
DEFAULT_GRADIENT_RATIO_THRESHOLD = 0.10  # strict G2
DEFAULT_MIN_GRADIENT_HEALTH_FOR_BLENDING = 0.7  # permissive G2
DEFAULT_MIN_FOSSILIZE_CONTRIBUTION = 1.0  # pp, strict G5

GATE_FOR_STAGE: dict[SeedStage, GateLevel] = {
    SeedStage.GERMINATED: GateLevel.G0,
    SeedStage.TRAINING: GateLevel.G1,
    SeedStage.BLENDING: GateLevel.G2,
    SeedStage.HOLDING: GateLevel.G3,
    SeedStage.FOSSILIZED: GateLevel.G5,
}


@dataclass(frozen=True)
class GateResult:
    """The verdict of one gate on one seed (§1.3 item 9)."""

    gate: GateLevel
    passed: bool
    score: float
    checks_passed: tuple[str, ...] = field(default_factory=tuple)
    checks_failed: tuple[str, ...] = field(default_factory=tuple)
    message: str = ""


def gate_for_stage(target: SeedStage | int) -> GateLevel:
    """The gate guarding entry into `target`; stages without a gate (and the reserved 5) raise."""
    try:
        stage = SeedStage(target)
    except ValueError as err:
        raise ValueError(f"no such stage {target}: stage 5 is reserved and never valid") from err
    if stage not in GATE_FOR_STAGE:
        raise ValueError(f"no gate guards entry into {stage.name}")
    return GATE_FOR_STAGE[stage]


class _Checks:
    """Collects named checks so each gate reads as a list of conditions."""

    def __init__(self) -> None:
        self.passed: list[str] = []
        self.failed: list[str] = []

    def check(self, ok: bool, passed_name: str, failed_name: str) -> None:
        if ok:
            self.passed.append(passed_name)
        else:
            self.failed.append(failed_name)

    def result(self, gate: GateLevel, score: float) -> GateResult:
        ok = not self.failed
        verdict = "passed" if ok else "failed: " + ", ".join(self.failed)
        return GateResult(
            gate=gate,
            passed=ok,
            score=min(1.0, max(0.0, score)),
            checks_passed=tuple(self.passed),
            checks_failed=tuple(self.failed),
            message=f"{gate.name} {verdict}",
        )


@dataclass(frozen=True)
class QualityGates:
    """Strict gates enforce quality thresholds; permissive ones only structure and safety (§1.3 item 10)."""

    permissive: bool = False

    def check_transition(self, state: SlotState, target: SeedStage | int) -> GateResult:
        """Evaluate the gate that guards entry into `target`."""
        return self.evaluate(gate_for_stage(target), state)

    def evaluate(self, gate: GateLevel | int, state: SlotState) -> GateResult:
        """Evaluate one gate on the seed's current state; gate 4 (removed shadowing) raises."""
        try:
            level = GateLevel(gate)
        except ValueError as err:
            raise ValueError(f"no such gate {gate}: G4 was removed with the shadowing stage") from err
        if level is GateLevel.G0:
            return self._g0(state)
        if level is GateLevel.G1:
            return self._g1(state)
        if level is GateLevel.G2:
            return self._g2(state)
        if level is GateLevel.G3:
            return self._g3(state)
        return self._g5(state)

    def _g0(self, state: SlotState) -> GateResult:
        # §1.3 item 11; NOOP is SlotState's "no blueprint" default, so it counts as an empty blueprint id.
        checks = _Checks()
        checks.check(bool(state.seed_id), "seed_id_present", "seed_id_missing")
        checks.check(state.blueprint is not BlueprintAction.NOOP, "blueprint_present", "blueprint_missing")
        return checks.result(GateLevel.G0, 1.0 if not checks.failed else 0.0)

    def _g1(self, state: SlotState) -> GateResult:
        # §1.3 item 12.
        checks = _Checks()
        checks.check(
            state.stage is SeedStage.GERMINATED, "stage_germinated", f"stage_not_germinated_{state.stage.name}"
        )
        return checks.result(GateLevel.G1, 1.0 if not checks.failed else 0.0)

    def _g2(self, state: SlotState) -> GateResult:
        # §1.3 items 13–14; improvement is in percentage points since the stage began.
        m = state.metrics
        improvement = m.current_val_accuracy - m.accuracy_at_stage_start
        dwell = m.epochs_in_current_stage
        checks = _Checks()
        checks.check(dwell >= DEFAULT_MIN_BLENDING_EPOCHS, f"epochs_in_stage_{dwell}", f"epochs_in_stage_low_{dwell}")
        if self.permissive:
            health = m.gradient_health
            measured = health is not None
            checks.check(measured, "gradient_health_measured", "gradient_health_unmeasured")
            checks.check(m.has_exploding is not True, "gradients_not_exploding", "gradients_exploding")
            if health is not None:
                checks.check(
                    health >= DEFAULT_MIN_GRADIENT_HEALTH_FOR_BLENDING,
                    f"gradient_health_{health:.2f}",
                    f"gradient_health_low_{health:.2f}",
                )
        else:
            checks.check(
                improvement >= DEFAULT_MIN_TRAINING_IMPROVEMENT,
                f"improvement_{improvement:.2f}pp",
                f"improvement_low_{improvement:.2f}pp",
            )
            ratio = m.seed_gradient_norm_ratio
            if ratio is None:
                checks.failed.append("seed_gradient_unmeasured")
            else:
                checks.check(
                    ratio >= DEFAULT_GRADIENT_RATIO_THRESHOLD,
                    f"seed_gradient_ratio_{ratio:.2f}",
                    f"seed_gradient_low_{ratio:.2f}",
                )
        score = min(1.0, improvement / 5.0) if improvement > 0 else 0.0
        return checks.result(GateLevel.G2, score)

    def _g3(self, state: SlotState) -> GateResult:
        # §1.3 item 16: HOLDING is reached only at full amplitude with the ramp finished.
        c = state.controller
        checks = _Checks()
        checks.check(
            c.alpha_target >= 1.0 - ALPHA_EPSILON,
            "alpha_target_full",
            f"alpha_target_partial_{c.alpha_target:.2f}",
        )
        checks.check(c.mode is AlphaMode.HOLD, "alpha_mode_hold", f"alpha_mode_{c.mode.name.lower()}")
        checks.check(
            abs(c.alpha - c.alpha_target) <= ALPHA_EPSILON,
            "alpha_at_target",
            f"alpha_off_target_{c.alpha:.3f}",
        )
        if not self.permissive:
            dwell = state.metrics.epochs_in_current_stage
            checks.check(
                dwell >= DEFAULT_MIN_BLENDING_EPOCHS, f"epochs_in_stage_{dwell}", f"epochs_in_stage_low_{dwell}"
            )
        return checks.result(GateLevel.G3, c.alpha)

    def _g5(self, state: SlotState) -> GateResult:
        # §1.3 item 17: no fallback when the counterfactual was never measured.
        contribution = state.metrics.counterfactual_contribution
        checks = _Checks()
        checks.check(contribution is not None, "counterfactual_measured", "counterfactual_unmeasured")
        checks.check(state.is_healthy, "seed_healthy", "seed_unhealthy")
        if not self.permissive and contribution is not None:
            checks.check(
                contribution >= DEFAULT_MIN_FOSSILIZE_CONTRIBUTION,
                f"contribution_{contribution:.2f}pp",
                f"contribution_low_{contribution:.2f}pp",
            )
        score = min(1.0, contribution / 10.0) if contribution is not None and contribution > 0 else 0.0
        return checks.result(GateLevel.G5, score)
