"""One env as Sanctum tracks it: its current episode, health status and seeds (reference/tolaria_karn.md §9.3)."""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field, replace

from leyline_schemas import (
    INTERNAL_OP_STAGES,
    EpochCompleted,
    SeedInternalKind,
    SeedStage,
    ShapleyComputed,
    SlotState,
    StepRecord,
    blueprint_name,
)
from services.karn.snapshot import EnvDetail, EnvRow, SlotCell
from services.observation.level_trajectory import GROW, SHRINK, reversal_rate, settled

HISTORY = 40
EXCELLENT_ABOVE = 80.0
STALL_AFTER_EPOCHS = 10
STALL_CHECKS = 3
DEGRADE_DROP = 1.0
DEGRADE_HITS = 3
#: Sanctum's thrash dot reads a seed's level changes of the last this many epochs (plans/kasmina2-phase0.md §9.3).
LEVEL_WINDOW_EPOCHS = 50


@dataclass
class LadderTrack:
    """One microstructured seed's level as the env's step records showed it, and when it moved and was live."""

    seed_id: str
    level: int
    changes: deque[tuple[int, int]] = field(default_factory=deque)
    live_epochs: deque[int] = field(default_factory=lambda: deque(maxlen=LEVEL_WINDOW_EPOCHS))

    def observe(self, epoch: int, state: SlotState) -> None:
        # Levels, not ops, are compared, so a step record lost on the way still leaves the right net change.
        step = GROW if state.internal_level > self.level else SHRINK
        self.changes.extend((epoch, step) for _ in range(abs(state.internal_level - self.level)))
        self.level = state.internal_level
        while self.changes and self.changes[0][0] <= epoch - LEVEL_WINDOW_EPOCHS:
            self.changes.popleft()
        if state.stage in INTERNAL_OP_STAGES and (not self.live_epochs or self.live_epochs[-1] != epoch):
            self.live_epochs.append(epoch)

    def trend(self) -> int:
        if not self.changes or settled([e for e, _ in self.changes], list(self.live_epochs)):
            return 0
        return self.changes[-1][1]

    def reversal_rate(self) -> float:
        return reversal_rate([d for _, d in self.changes])


@dataclass
class EnvState:
    """Mutable per-env state; only the aggregator touches it, under its lock."""

    env_id: int
    episode: int = -1
    epoch: int = 0
    max_epochs: int = 0
    accuracy: float | None = None
    best: float | None = None
    best_epoch: int = 0
    history: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    status: str = "initializing"
    since_improvement: int = 0
    stall_checks: int = 0
    degrade_hits: int = 0
    rollback_epoch: int | None = None
    last_action: str = "-"
    recent_actions: deque[str] = field(default_factory=lambda: deque(maxlen=12))
    slots: dict[str, SlotCell] = field(default_factory=dict)
    step_key: tuple[int, int] = (-1, -1)
    last_step: StepRecord | None = None
    returns: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    episodes_done: int = 0
    policy_id: str = ""
    arm: str = ""
    total_params: int = 0
    host_params: int = 0
    shapley: ShapleyComputed | None = None
    shapley_episode: int | None = None
    ladders: dict[str, LadderTrack] = field(default_factory=dict)

    def _start_episode(self, episode: int) -> None:
        self.episode = episode
        self.epoch = 0
        self.accuracy = None
        self.best = None
        self.best_epoch = 0
        self.history.clear()
        self.status = "initializing"
        self.since_improvement = self.stall_checks = self.degrade_hits = 0
        self.rollback_epoch = None
        self.recent_actions.clear()
        self.slots = {}
        self.ladders = {}
        self.last_step = None
        self.step_key = (-1, -1)

    def observe_epoch(self, episode: int, epoch: int, p: EpochCompleted) -> bool:
        """Take one EpochCompleted; False (ignored) when it is older than what the env already shows."""
        if episode < self.episode or (episode == self.episode and epoch <= self.epoch):
            return False
        if episode > self.episode:
            self._start_episode(episode)
        previous = self.accuracy
        self.epoch = epoch
        self.accuracy = p.val_accuracy
        self.history.append(p.val_accuracy)
        self.policy_id = p.policy_id or self.policy_id
        self.total_params, self.host_params = p.total_params, p.host_params
        self._update_status(p.val_accuracy, previous, epoch)
        if self.rollback_epoch is not None and epoch > self.rollback_epoch:
            self.rollback_epoch = None
        action = p.op + (f"@{p.target_slot}" if p.target_slot else "")
        self.last_action = action if p.outcome in ("applied", "waited", "") else f"{action} ({p.outcome})"
        self.recent_actions.append(f"e{epoch:>3} {self.last_action}")
        if self.step_key < (episode, epoch):
            # No step record for this epoch (yet): the telemetry's slot strings are the best we know.
            cells = {}
            for slot_id, text in p.slots.items():
                old = self.slots.get(slot_id, SlotCell(slot_id))
                stage, _, blueprint = text.partition(":")
                if blueprint != old.blueprint:  # another seed: the last one's level says nothing about it
                    fresh = SlotCell(slot_id)
                    old = replace(old, internal_kind=fresh.internal_kind, internal_level=fresh.internal_level)
                cells[slot_id] = replace(
                    old,
                    stage=stage if blueprint else "empty",
                    blueprint=blueprint,
                    contribution=p.contributions.get(slot_id, old.contribution if blueprint else None),
                )
            self.slots = cells
        return True

    def _update_status(self, accuracy: float, previous: float | None, epoch: int) -> None:
        if self.best is None or accuracy > self.best:
            improved = self.best is not None
            self.best, self.best_epoch = accuracy, epoch
            self.since_improvement = self.stall_checks = 0
            if improved:
                self.degrade_hits = 0
                self.status = "excellent" if accuracy > EXCELLENT_ABOVE else "healthy"
        else:
            self.since_improvement += 1
            if self.since_improvement > STALL_AFTER_EPOCHS:
                self.stall_checks += 1
                if self.stall_checks >= STALL_CHECKS:
                    self.status = "stalled"
        if previous is not None and accuracy < previous - DEGRADE_DROP:
            self.degrade_hits += 1
            if self.degrade_hits >= DEGRADE_HITS:
                self.status = "degraded"

    def observe_step(self, record: StepRecord) -> bool:
        """Take one step record: exact slot states, gradient flags and counterfactuals of that epoch."""
        key = (record.episode, record.step)
        if key < self.step_key or record.episode < self.episode:
            return False
        if record.episode > self.episode:
            self._start_episode(record.episode)
        self.step_key = key
        self.last_step = record
        self.max_epochs = record.report.max_epochs
        self.arm = record.arm
        self.policy_id = record.policy_id
        reports = {r.slot_id: r for r in record.report.slots}
        cells = {}
        for state in record.directive.slots or record.directive.observed_slots:
            r = reports.get(state.slot_id)
            occupied = state.stage not in (SeedStage.DORMANT, SeedStage.UNKNOWN)
            ladder = self._ladder(record.step, state) if occupied else None
            cells[state.slot_id] = SlotCell(
                slot_id=state.slot_id,
                stage=state.stage.name if occupied else "empty",
                blueprint=blueprint_name(state.blueprint) if occupied else "",
                seed_id=state.seed_id,
                alpha=state.controller.alpha if occupied else None,
                contribution=r.contribution if r else None,
                solo_on_accuracy=r.solo_on_accuracy if r else None,
                gradient_health=r.gradient_health if r else None,
                gradient_ratio=r.seed_gradient_norm_ratio if r else None,
                vanishing=bool(r and r.has_vanishing),
                exploding=bool(r and r.has_exploding),
                epochs_in_stage=state.metrics.epochs_in_current_stage,
                germinated_epoch=state.germinated_epoch,
                params=(r.seed_param_count if r else 0) or state.metrics.seed_param_count,
                interaction_sum=r.interaction_sum if r else 0.0,
                internal_kind=state.internal_kind.name if ladder is not None else "",
                internal_level=state.internal_level,
                internal_max_level=state.internal_max_level,
                level_trend=ladder.trend() if ladder is not None else 0,
                level_reversal_rate=ladder.reversal_rate() if ladder is not None else 0.0,
            )
        if cells:
            self.slots = cells
        return True

    def _ladder(self, epoch: int, state: SlotState) -> LadderTrack | None:
        """The slot's level track, started afresh for a new seed; None for a seed without internal structure."""
        if state.internal_kind is SeedInternalKind.NONE:
            self.ladders.pop(state.slot_id, None)
            return None
        track = self.ladders.get(state.slot_id)
        if track is None or track.seed_id != state.seed_id:
            track = self.ladders[state.slot_id] = LadderTrack(state.seed_id, state.internal_level)
        track.observe(epoch, state)
        return track

    def row(self, slot_ids: list[str]) -> EnvRow:
        returns = list(self.returns)
        return EnvRow(
            env_id=self.env_id,
            episode=self.episode,
            epoch=self.epoch,
            max_epochs=self.max_epochs,
            accuracy=self.accuracy,
            best_accuracy=self.best,
            accuracy_history=tuple(self.history),
            last_return=returns[-1] if returns else None,
            mean_return=statistics.fmean(returns) if returns else None,
            return_history=tuple(returns),
            slots=tuple(self.slots.get(s, SlotCell(s)) for s in slot_ids),
            last_action=self.last_action,
            status="rollback" if self.rollback_epoch is not None else self.status,
            rollback=self.rollback_epoch is not None,
            episodes_done=self.episodes_done,
            policy_id=self.policy_id,
            arm=self.arm,
        )

    def _shapley_rows(self) -> tuple[tuple[str, float, float | None], ...]:
        if self.shapley is None:
            return ()
        std = self.shapley.shapley_std
        return tuple((slot, value, std.get(slot)) for slot, value in sorted(self.shapley.shapley.items()))

    def detail(self, slot_ids: list[str]) -> EnvDetail:
        step = self.last_step
        report = step.report if step is not None else None
        interactions = tuple((i.slot_a, i.slot_b, i.interaction) for i in report.interactions) if report else ()
        return EnvDetail(
            env_id=self.env_id,
            episode=self.episode,
            epoch=self.epoch,
            accuracy=self.accuracy,
            all_off_accuracy=report.all_off_accuracy if report else None,
            seeds=tuple(self.slots.get(s, SlotCell(s)) for s in slot_ids),
            interactions=interactions,
            accuracy_history=tuple(self.history),
            recent_actions=tuple(self.recent_actions),
            from_steps=step is not None,
            shapley=self._shapley_rows(),
            shapley_episode=self.shapley_episode,
        )
