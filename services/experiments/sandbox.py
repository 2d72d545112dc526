"""A synthetic lifecycle task whose best policy is known, run in one process for `esper bench learning`.

The host is simulated (a saturating accuracy curve, no torch training) and each blueprint has a fixed hidden
quality, so the optimal lifecycle is known: germinate the best blueprint at once, advance it as soon as each gate
allows, and fossilize it. Everything else is the real system's pure core: Kasmina's tick, observation, masks and
execution, Tolaria's signal tracker, Tamiyo's policies, and StepRecords exactly as Tolaria publishes them, which
Simic's rewards, rollouts and PPO then consume unchanged.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from leyline_schemas import (
    Decision,
    DecisionOutcome,
    DecisionRequest,
    EpisodeSummary,
    EpochReport,
    FactoredAction,
    Fossilize,
    Germinate,
    LifecycleConfig,
    LifecycleOp,
    Prune,
    SeedStage,
    SlotConfig,
    SlotReport,
    SlotSpec,
    SlotState,
    StepRecord,
    StepRequest,
    TempoAction,
    Topology,
)
from leyline_schemas.enums import BlueprintAction
from services.kasmina.alpha import at_target
from services.kasmina.gates import DEFAULT_MIN_BLENDING_EPOCHS
from services.kasmina.step import complete_step, prepare_step
from services.tolaria.signals import SignalTracker

DecideFn = Callable[[DecisionRequest], Decision]

#: Accuracy points a fully blended, mature seed of each blueprint adds to the host (hidden from the policy).
BLUEPRINT_GAINS: dict[BlueprintAction, float] = {
    BlueprintAction.CONV_HEAVY: 6.0,
    BlueprintAction.CONV_LIGHT: 3.0,
    BlueprintAction.BOTTLENECK: 1.5,
    BlueprintAction.CONV_SMALL: 0.5,
    BlueprintAction.NORM: -1.0,
    BlueprintAction.DEPTHWISE: -2.5,
    BlueprintAction.ATTENTION: -4.0,
}
BLUEPRINT_PARAMS: dict[BlueprintAction, int] = {
    BlueprintAction.CONV_HEAVY: 24_000,
    BlueprintAction.CONV_LIGHT: 6_000,
    BlueprintAction.BOTTLENECK: 4_000,
    BlueprintAction.CONV_SMALL: 3_000,
    BlueprintAction.NORM: 500,
    BlueprintAction.DEPTHWISE: 2_000,
    BlueprintAction.ATTENTION: 12_000,
}
OPTIMAL_BLUEPRINT = max(BLUEPRINT_GAINS, key=lambda bp: BLUEPRINT_GAINS[bp])


@dataclass(frozen=True)
class SandboxConfig:
    """The simulated task: one CNN host with `slots`, an accuracy curve and measurement noise.

    The host starts close to its plateau, so a fossil's total improvement is its own doing and SIMPLIFIED's
    "contributing fossil" bonus goes only to good blueprints; auto-forward gates leave the policy the decisions that
    matter (what to germinate, when, whether to keep it, when to fossilize).
    """

    episode_length: int = 25
    slots: tuple[str, ...] = ("r0c0",)
    host_params: int = 60_000
    start_accuracy: float = 81.5
    plateau_accuracy: float = 82.0
    time_constant: float = 3.0
    maturity_epochs: float = 4.0
    noise: float = 0.3
    max_seeds: int = 0
    auto_forward_gates: tuple[int, ...] = (1, 2, 3)

    def slot_config(self) -> SlotConfig:
        return SlotConfig(
            topology=Topology.CNN,
            slots=[SlotSpec(slot_id=s, channels=32, order=i) for i, s in enumerate(self.slots)],
            host_param_count=self.host_params,
        )

    def lifecycle(self) -> LifecycleConfig:
        return LifecycleConfig(
            max_seeds=self.max_seeds,
            permissive_gates=True,
            auto_forward_gates=list(self.auto_forward_gates),
            max_epochs=self.episode_length,
        )


@dataclass
class SandboxEpisode:
    """One env's episode on the simulated host; `step` runs one epoch through the real lifecycle core."""

    config: SandboxConfig
    seed: int
    run_id: str = "sandbox"
    arm_id: str = "main"
    env_id: int = 0
    episode: int = 0
    policy_id: str = "policy"
    deterministic: bool = False
    rng: random.Random = field(init=False)
    slot_states: list[SlotState] = field(init=False)
    signals: SignalTracker = field(init=False)
    losses: list[float] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)
    policy_state: bytes = b""
    last_op: LifecycleOp = LifecycleOp.WAIT
    last_ok: bool = True
    counters: dict[str, int] = field(default_factory=lambda: {"germinated": 0, "fossilized": 0, "pruned": 0})

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        # Each episode's host differs a little, so the policy must read the observation, not memorise a script.
        self.start = self.config.start_accuracy + self.rng.uniform(-3.0, 3.0)
        self.plateau = self.config.plateau_accuracy + self.rng.uniform(-2.0, 2.0)
        self.slot_states = [SlotState(slot_id=s) for s in self.config.slots]
        self.signals = SignalTracker(plateau_threshold=0.5)

    def _seed_effect(self, state: SlotState, epoch: int) -> float:
        if state.stage not in (SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED):
            return 0.0
        age = max(0, epoch - state.germinated_epoch)
        maturity = 1.0 - math.exp(-age / self.config.maturity_epochs)
        return BLUEPRINT_GAINS.get(state.blueprint, 0.0) * maturity * state.controller.alpha

    def _report(self, epoch: int) -> EpochReport:
        cfg = self.config
        host = self.plateau - (self.plateau - self.start) * math.exp(-epoch / cfg.time_constant)
        host += self.rng.gauss(0.0, cfg.noise)
        effects = {s.slot_id: self._seed_effect(s, epoch) for s in self.slot_states}
        accuracy = min(99.0, host + sum(effects.values()))
        loss = 0.05 + 2.0 * (1.0 - accuracy / 100.0)
        self.losses = [*self.losses, loss][-5:]
        self.accuracies = [*self.accuracies, accuracy][-5:]
        blended = [s for s in self.slot_states if s.occupied and s.controller.alpha > 0.0]
        slots = []
        for state in self.slot_states:
            measured = state in blended
            params = BLUEPRINT_PARAMS.get(state.blueprint, 0) if state.occupied else 0
            slots.append(
                SlotReport(
                    slot_id=state.slot_id,
                    contribution=effects[state.slot_id] + self.rng.gauss(0.0, 0.2) if measured else None,
                    gradient_norm=1.0 if state.occupied else None,
                    gradient_health=0.9 if state.occupied else None,
                    has_vanishing=False if state.occupied else None,
                    has_exploding=False if state.occupied else None,
                    seed_param_count=params,
                )
            )
        seed_params = sum(r.seed_param_count for r in slots)
        return EpochReport(
            epoch=epoch,
            max_epochs=cfg.episode_length,
            train_loss=loss,
            train_accuracy=accuracy,
            val_loss=loss,
            val_accuracy=accuracy,
            val_loss_history=list(self.losses),
            val_accuracy_history=list(self.accuracies),
            committed_val_accuracy=accuracy
            - sum(effects[s.slot_id] for s in blended if s.stage is not SeedStage.FOSSILIZED),
            all_off_accuracy=accuracy - sum(effects.values()) if blended else None,
            host_params=cfg.host_params,
            total_params=cfg.host_params + seed_params,
            slots=slots,
            signals=self.signals.update(accuracy, loss),
        )

    @property
    def total_seeds(self) -> int:
        live = (SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED)
        return sum(1 for s in self.slot_states if s.stage in live)

    def step(self, epoch: int, decide: DecideFn) -> StepRecord:
        """One epoch: report → Kasmina's tick, observation and masks → the policy → execution → a StepRecord."""
        cfg = self.config
        report = self._report(epoch)
        request = StepRequest(
            run_id=self.run_id,
            env_id=self.env_id,
            episode=self.episode,
            epoch=epoch,
            policy_id=self.policy_id,
            slot_config=cfg.slot_config(),
            lifecycle=cfg.lifecycle(),
            report=report,
            slots=self.slot_states,
            policy_state=self.policy_state,
            last_op=self.last_op,
            last_action_succeeded=self.last_ok,
            total_seeds=self.total_seeds,
            deterministic=self.deterministic,
        )
        prepared = prepare_step(request)
        decision = decide(prepared.decision_request())
        directive, result = complete_step(prepared, decision, DecisionOutcome.APPLIED)
        for mutation in result.mutations:
            if isinstance(mutation, Germinate):
                self.counters["germinated"] += 1
            elif isinstance(mutation, Fossilize):
                self.counters["fossilized"] += 1
            elif isinstance(mutation, Prune):
                self.counters["pruned"] += 1
        self.slot_states = list(result.slots)
        self.policy_state = decision.policy_state
        self.last_op = result.effective_op
        self.last_ok = result.succeeded
        done = epoch == cfg.episode_length
        return StepRecord(
            run_id=self.run_id,
            arm=self.arm_id,
            env_id=self.env_id,
            episode=self.episode,
            step=epoch,
            policy_id=self.policy_id,
            policy_version=decision.policy_version,
            report=report,
            directive=directive,
            applied=True,
            done=done,
            truncated=done,
            summary=self._summary(report.val_accuracy) if done else None,
        )

    def _summary(self, accuracy: float) -> EpisodeSummary:
        fossils = [s for s in self.slot_states if s.stage is SeedStage.FOSSILIZED]
        return EpisodeSummary(
            final_accuracy=accuracy,
            host_params=self.config.host_params,
            seed_params_added=sum(BLUEPRINT_PARAMS.get(s.blueprint, 0) for s in fossils),
            seeds_germinated=self.counters["germinated"],
            seeds_fossilized=self.counters["fossilized"],
            seeds_pruned=self.counters["pruned"],
        )

    def run(self, decide: DecideFn) -> list[StepRecord]:
        return [self.step(epoch, decide) for epoch in range(1, self.config.episode_length + 1)]


def oracle_decision(request: DecisionRequest) -> Decision:
    """The known-optimal lifecycle: the best blueprint at once, fastest blend, advance when a gate allows, fossilize."""
    action = FactoredAction(op=LifecycleOp.WAIT, slot=0)
    reason = "wait"
    advance = request.masks.op[LifecycleOp.ADVANCE]  # with auto-forward gates the tick advances by itself
    for index, state in enumerate(request.slots):
        stage = state.stage
        if stage is SeedStage.DORMANT and request.masks.slot_by_op[LifecycleOp.GERMINATE][index]:
            action = FactoredAction(
                op=LifecycleOp.GERMINATE, slot=index, blueprint=OPTIMAL_BLUEPRINT, tempo=TempoAction.FAST
            )
            reason = "germinate the best blueprint"
        elif advance and (
            stage is SeedStage.GERMINATED
            or (stage is SeedStage.TRAINING and state.metrics.epochs_in_current_stage >= DEFAULT_MIN_BLENDING_EPOCHS)
            or (stage is SeedStage.BLENDING and at_target(state.controller) and state.controller.alpha_target >= 1.0)
        ):
            action, reason = FactoredAction(op=LifecycleOp.ADVANCE, slot=index), "advance"
        elif stage is SeedStage.HOLDING and state.metrics.counterfactual_contribution is not None:
            action, reason = FactoredAction(op=LifecycleOp.FOSSILIZE, slot=index), "fossilize"
        else:
            continue
        break
    return Decision(policy_id=request.policy_id, policy_version=0, action=action, reason=f"oracle: {reason}")
