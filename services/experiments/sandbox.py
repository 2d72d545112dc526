"""A synthetic lifecycle task whose best policy is known, run in one process for `esper bench learning`.

The host is simulated (a saturating accuracy curve, no torch training) and each blueprint has a fixed hidden
quality, so the optimal lifecycle is known: germinate the best blueprint at once, advance it as soon as each gate
allows, and fossilize it. Everything else is the real system's pure core: Kasmina's tick, observation, masks and
execution, Tolaria's signal tracker, Tamiyo's policies, and StepRecords exactly as Tolaria publishes them, which
Simic's rewards, rollouts and PPO then consume unchanged. The ladder variant (plans/kasmina2-phase0.md §8.5) adds
CONV_LADDER, whose gain and parameters grow with its level, so a ladder grown to its top beats conv_heavy.
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
    SeedInternalKind,
    SeedStage,
    SetInternalLevel,
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
from leyline_schemas.lifecycle import SEED_INTERNALS
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
#: The default sandbox's allowlist: its seven modelled blueprints, so its known optimum stays conv_heavy.
SANDBOX_BLUEPRINTS: tuple[BlueprintAction, ...] = tuple(BLUEPRINT_GAINS)

#: §8.5: the ladder's gain at levels 0…4 (a full ladder beats conv_heavy's 6.0) and its parameters per active rung
#: (a full ladder costs conv_heavy's 24,000). Rung i adds LADDER_GAINS[i + 1] − LADDER_GAINS[i] as it matures.
LADDER_GAINS: tuple[float, ...] = (0.0, 3.0, 5.0, 6.0, 6.5)
LADDER_PARAMS_PER_LEVEL = 6_000
if len(LADDER_GAINS) != SEED_INTERNALS[BlueprintAction.CONV_LADDER].max_level + 1:
    raise ValueError("sandbox invariant: LADDER_GAINS needs one gain per conv_ladder level, 0 to max included")


def seed_params(state: SlotState) -> int:
    """The simulated seed's active parameters: a ladder's follow its level, as the real slot's count does (§6.4)."""
    if not state.occupied:
        return 0
    if state.blueprint is BlueprintAction.CONV_LADDER:
        return LADDER_PARAMS_PER_LEVEL * state.internal_level
    return BLUEPRINT_PARAMS.get(state.blueprint, 0)


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
    ladder: bool = False

    @property
    def blueprints(self) -> tuple[BlueprintAction, ...]:
        """The germination allowlist: the seven modelled blueprints, plus CONV_LADDER in the ladder variant."""
        return (*SANDBOX_BLUEPRINTS, BlueprintAction.CONV_LADDER) if self.ladder else SANDBOX_BLUEPRINTS

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
            blueprints=list(self.blueprints),
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
    counters: dict[str, int] = field(
        default_factory=lambda: {"germinated": 0, "fossilized": 0, "pruned": 0, "grown": 0, "shrunk": 0}
    )
    #: slot → (seed id, the activation epoch of each active ladder rung, lowest rung first).
    rungs: dict[str, tuple[str, list[int]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        # Each episode's host differs a little, so the policy must read the observation, not memorise a script.
        self.start = self.config.start_accuracy + self.rng.uniform(-3.0, 3.0)
        self.plateau = self.config.plateau_accuracy + self.rng.uniform(-2.0, 2.0)
        self.slot_states = [SlotState(slot_id=s) for s in self.config.slots]
        self.signals = SignalTracker(plateau_threshold=0.5)

    def _maturity(self, since: int, epoch: int) -> float:
        return 1.0 - math.exp(-max(0, epoch - since) / self.config.maturity_epochs)

    def seed_effect(self, state: SlotState, epoch: int) -> float:
        """Accuracy points the seed adds at `epoch`: its gain so far matured, times alpha; nothing before BLENDING."""
        if state.stage not in (SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED):
            return 0.0
        if state.blueprint is BlueprintAction.CONV_LADDER:
            # Each rung matures from its own activation epoch (§8.5), so a late rung pays off late.
            _, activated = self.rungs.get(state.slot_id, (state.seed_id, []))
            gain = sum(
                (LADDER_GAINS[i + 1] - LADDER_GAINS[i]) * self._maturity(since, epoch)
                for i, since in enumerate(activated)
            )
        else:
            gain = BLUEPRINT_GAINS.get(state.blueprint, 0.0) * self._maturity(state.germinated_epoch, epoch)
        return gain * state.controller.alpha

    def _track_rungs(self) -> None:
        """Keep each ladder's rung activation epochs in step with its level: germination, then each GROW."""
        for state in self.slot_states:
            if state.internal_kind is SeedInternalKind.NONE:
                self.rungs.pop(state.slot_id, None)
                continue
            owner, activated = self.rungs.get(state.slot_id, (state.seed_id, []))
            if owner != state.seed_id:
                activated = []
            changed = state.internal_level_changed_epoch
            while len(activated) < state.internal_level:
                activated.append(changed if changed >= 0 else state.germinated_epoch)
            del activated[state.internal_level :]
            self.rungs[state.slot_id] = (state.seed_id, activated)

    def _report(self, epoch: int) -> EpochReport:
        cfg = self.config
        host = self.plateau - (self.plateau - self.start) * math.exp(-epoch / cfg.time_constant)
        host += self.rng.gauss(0.0, cfg.noise)
        effects = {s.slot_id: self.seed_effect(s, epoch) for s in self.slot_states}
        accuracy = min(99.0, host + sum(effects.values()))
        loss = 0.05 + 2.0 * (1.0 - accuracy / 100.0)
        self.losses = [*self.losses, loss][-5:]
        self.accuracies = [*self.accuracies, accuracy][-5:]
        blended = [s for s in self.slot_states if s.occupied and s.controller.alpha > 0.0]
        slots = []
        for state in self.slot_states:
            measured = state in blended
            params = seed_params(state)
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
        added = sum(r.seed_param_count for r in slots)
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
            total_params=cfg.host_params + added,
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
            elif isinstance(mutation, SetInternalLevel):
                self.counters["grown" if mutation.to_level > mutation.from_level else "shrunk"] += 1
        self.slot_states = list(result.slots)
        self._track_rungs()
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
            seed_params_added=sum(seed_params(s) for s in fossils),
            seeds_germinated=self.counters["germinated"],
            seeds_fossilized=self.counters["fossilized"],
            seeds_pruned=self.counters["pruned"],
        )

    def run(self, decide: DecideFn) -> list[StepRecord]:
        return [self.step(epoch, decide) for epoch in range(1, self.config.episode_length + 1)]


def oracle_decision(request: DecisionRequest) -> Decision:
    """The known-optimal lifecycle: the best blueprint at once, fastest blend, advance when a gate allows, fossilize."""
    return _oracle(request, OPTIMAL_BLUEPRINT, "oracle")


def oracle_ladder_decision(request: DecisionRequest) -> Decision:
    """The ladder variant's optimum (§8.5): germinate the ladder, grow it every epoch to its top, then fossilize."""
    for index, legal in enumerate(request.masks.slot_by_op[LifecycleOp.GROW_INTERNAL]):
        if legal:
            action = FactoredAction(op=LifecycleOp.GROW_INTERNAL, slot=index)
            return Decision(policy_id=request.policy_id, policy_version=0, action=action, reason="oracle_ladder: grow")
    return _oracle(request, BlueprintAction.CONV_LADDER, "oracle_ladder")


def _oracle(request: DecisionRequest, blueprint: BlueprintAction, name: str) -> Decision:
    action = FactoredAction(op=LifecycleOp.WAIT, slot=0)
    reason = "wait"
    advance = request.masks.op[LifecycleOp.ADVANCE]  # with auto-forward gates the tick advances by itself
    for index, state in enumerate(request.slots):
        stage = state.stage
        if stage is SeedStage.DORMANT and request.masks.slot_by_op[LifecycleOp.GERMINATE][index]:
            action = FactoredAction(op=LifecycleOp.GERMINATE, slot=index, blueprint=blueprint, tempo=TempoAction.FAST)
            reason = f"germinate {blueprint.name.lower()}"
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
    return Decision(policy_id=request.policy_id, policy_version=0, action=action, reason=f"{name}: {reason}")
