"""One env's episode: a fresh host with seed slots, trained and validated one epoch per step, with its governor."""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from leyline_schemas import (
    ACTIVE_STAGES,
    LIVE_STAGES,
    EpisodeSummary,
    EpochReport,
    Germinate,
    GovernorReport,
    LifecycleConfig,
    MutationRefused,
    PairInteraction,
    SeedFossilized,
    SeedPruned,
    SeedStage,
    SetInternalLevel,
    SlotConfig,
    SlotReport,
    SlotState,
    StepDirective,
    TopologyManifest,
)
from services.kasmina.mechanics.gradients import GradientMonitor
from services.kasmina.mechanics.lifecycle import governor_prune
from services.kasmina.mechanics.model import MorphogeneticModel
from services.kasmina.mechanics.slot import GerminationError, SlotSyncError
from services.tolaria.acceleration import Acceleration, choose
from services.tolaria.compute import ComputeLedger
from services.tolaria.data import BatchStream
from services.tolaria.governor import Governor, GovernorConfig, state_digest
from services.tolaria.signals import SignalTracker
from services.tolaria.tasks import TaskData, TaskSpec
from services.tolaria.topology import parameter_split, record_topology, replay_topology
from services.tolaria.validation import TerminalAttribution, ValidationResult, fused_validate, terminal_attribution

log = logging.getLogger("esper.tolaria.env")

HISTORY = 5
MAX_GRAD_NORM = 1.0
GRADIENT_STRIDE = 10


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)


@dataclass
class EpisodeCounters:
    germinated: int = 0
    fossilized: int = 0
    pruned: int = 0
    rollbacks: int = 0


@dataclass
class EpochOutcome:
    """What one epoch produced besides its report: the rollback to announce, if any."""

    report: EpochReport
    rollback: GovernorReport | None = None
    rollback_events: list[SeedPruned] = field(default_factory=list)
    attribution: TerminalAttribution | None = None


class EpisodeEnv:
    """The model, its optimizers, its slot states and its governor: everything Tolaria checkpoints together."""

    def __init__(
        self,
        task: TaskSpec,
        task_data: TaskData,
        slot_ids: list[str],
        *,
        seed: int,
        episode_length: int,
        batch_size: int,
        max_batches: int = 0,
        device: str = "cpu",
        lifecycle: LifecycleConfig | None = None,
        acceleration: Acceleration | None = None,
        replay: TopologyManifest | None = None,
    ) -> None:
        seed_everything(seed)
        self.acceleration = acceleration or choose(device)
        self.task = task
        self.device = torch.device(device)
        self.seed = seed
        self.episode_length = episode_length
        # A language model's vocabulary is the tokenizer's, which the data loader chose (byte-level offline).
        vocab = task_data.metadata.get("vocab_size") if task.task_type == "lm" else None
        self.model = MorphogeneticModel(task.build_host(**({"vocab_size": vocab} if vocab else {})), slot_ids).to(
            self.device
        )
        self.slot_ids = [spec.slot_id for spec in self.model.slot_specs()]
        # Germination changes the graph, so a compiled forward recompiles then; dynamic=False keeps shapes fixed.
        self._compiled = torch.compile(self.model, dynamic=False) if self.acceleration.compile else None
        self.host_optimizer = torch.optim.SGD(
            self.model.host_parameters(), lr=task.host_lr, momentum=0.9, weight_decay=5e-4
        )
        self.seed_optimizers: dict[str, torch.optim.Optimizer] = {}
        data = task_data.split
        host = self.acceleration.host_tensor
        self.augment = task_data.augment
        self.augment_generator = torch.Generator().manual_seed(seed + 1)
        self.train_stream = BatchStream(
            data.x_train,
            data.y_train,
            batch_size,
            seed=seed + 1,
            shuffle=True,
            drop_last=False,
            max_batches=max_batches or None,
        )
        val = BatchStream(
            host(data.x_val), host(data.y_val), batch_size, seed=seed, shuffle=False, max_batches=max_batches or None
        )
        self.val_batches = list(val.epoch())
        self.val_samples = sum(len(y) for _, y in self.val_batches)
        self.governor = Governor(GovernorConfig.for_classes(int(vocab or task.num_classes or 10)))
        self.signals = SignalTracker(plateau_threshold=task.plateau_threshold)
        self.gradients = GradientMonitor()
        self.slot_states = [SlotState(slot_id=sid) for sid in self.slot_ids]
        if replay is not None:
            # Static-final (proof-baselines §3.3): the seeds draw fresh weights from the global RNG right after the
            # host, so the host's weights equal the source episode's at epoch 0.
            self.slot_states = replay_topology(task.name, self.model, self.slot_states, replay)
        self.ledger = ComputeLedger(self.model, data.x_val[:1].to(self.device))
        self.lifecycle = lifecycle or LifecycleConfig(max_epochs=episode_length)
        self.loss_history: list[float] = []
        self.accuracy_history: list[float] = []
        self.counters = EpisodeCounters()
        self.fossilized_since_snapshot = False
        self.host_params = self.model.host_param_count
        self.last_accuracy = 0.0
        self._snapshot()

    # ------------------------------------------------------------------ description

    def slot_config(self) -> SlotConfig:
        return SlotConfig(
            topology=self.model.topology, slots=self.model.slot_specs(), host_param_count=self.host_params
        )

    @property
    def total_seeds(self) -> int:
        """Seeds germinated this episode that still occupy a slot, fossils included (the max_seeds budget)."""
        return sum(1 for s in self.slot_states if s.stage in LIVE_STAGES or s.stage is SeedStage.FOSSILIZED)

    # ------------------------------------------------------------------ one epoch

    def seed_optimizer(self, slot_id: str) -> torch.optim.Optimizer | None:
        """The optimizer of the seed in `slot_id`, made on first use; None (and dropped) while it is not active."""
        slot = self.model.slot(slot_id)
        if not slot.is_active:
            self.seed_optimizers.pop(slot_id, None)
            return None
        optimizer = self.seed_optimizers.get(slot_id)
        if optimizer is None:
            params = slot.seed_parameters()
            if not params:
                raise RuntimeError(f"seed in {slot_id} has no trainable parameters")
            optimizer = torch.optim.SGD(params, lr=self.task.seed_lr, momentum=0.9)
            self.seed_optimizers[slot_id] = optimizer
        return optimizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self._compiled(x) if self._compiled is not None else self.model(x)
        return result

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if logits.dim() == 3:
            return F.cross_entropy(logits.flatten(0, 1), y.flatten())
        return F.cross_entropy(logits, y)

    def train_epoch(self) -> tuple[float, float]:
        """One pass over the training data; host and each seed are clipped and stepped separately (§3.2)."""
        self.model.train()
        optimizers = {sid: opt for sid in self.slot_ids if (opt := self.seed_optimizer(sid)) is not None}
        host_params = self.model.host_parameters()
        loss_total, correct, count, batches = 0.0, 0.0, 0, 0
        order = hashlib.sha256()
        for step, (x, y) in enumerate(self.train_stream.epoch()):
            # The label sequence in training order stands for the sample order (equal within a pair of cohorts).
            order.update(y.cpu().numpy().tobytes())
            if self.augment is not None:
                x = self.augment(x, self.augment_generator)
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            self.host_optimizer.zero_grad(set_to_none=True)
            for optimizer in optimizers.values():
                optimizer.zero_grad(set_to_none=True)
            with self.acceleration.autocast():
                logits = self.forward(x)
                loss = self._loss(logits.float(), y)
            loss.backward()  # type: ignore[no-untyped-call]  # torch's Tensor.backward is unannotated
            if step % GRADIENT_STRIDE == 0:
                self.gradients.observe(self.model)
            nn.utils.clip_grad_norm_(host_params, MAX_GRAD_NORM)
            for sid in optimizers:
                nn.utils.clip_grad_norm_(self.model.seed_parameters(sid), MAX_GRAD_NORM)
            self.host_optimizer.step()
            for optimizer in optimizers.values():
                optimizer.step()
            loss_total += float(loss.detach())
            correct += float((logits.detach().argmax(-1) == y).float().sum())
            count += y.numel()
            batches += 1
        self.ledger.trained(count, order.hexdigest()[:16])
        return loss_total / max(1, batches), 100.0 * correct / max(1, count)

    def run_epoch(self, epoch: int) -> EpochOutcome:
        """Train, validate (fused counterfactuals), consult the governor, and build the epoch report."""
        started = time.perf_counter()
        train_loss, train_accuracy = self.train_epoch()
        trained = time.perf_counter()
        with self.acceleration.autocast():
            validation = fused_validate(self.model, self.val_batches, self.device)
        validated = time.perf_counter()
        compute = self.ledger.epoch(validation.config_alphas, self.val_samples, trained - started, validated - trained)
        verdict = self.governor.check(validation.val_loss)
        rollback: GovernorReport | None = None
        events: list[SeedPruned] = []
        if verdict.panic and verdict.reason is not None:
            rollback, events = self._rollback(verdict.reason.value, verdict.loss_at_panic, verdict.threshold)
        elif self.governor.should_snapshot(epoch, self.fossilized_since_snapshot):
            self._snapshot()
        val_loss = validation.val_loss if math.isfinite(validation.val_loss) else float("nan")
        self.loss_history = ([*self.loss_history, val_loss])[-HISTORY:]
        self.accuracy_history = ([*self.accuracy_history, validation.val_accuracy])[-HISTORY:]
        signals = self.signals.update(validation.val_accuracy, validation.val_loss)
        self.last_accuracy = validation.val_accuracy
        report = EpochReport(
            epoch=epoch,
            max_epochs=self.episode_length,
            train_loss=train_loss,
            train_accuracy=train_accuracy,
            val_loss=validation.val_loss,
            val_accuracy=validation.val_accuracy,
            val_loss_history=list(self.loss_history),
            val_accuracy_history=list(self.accuracy_history),
            committed_val_accuracy=validation.all_off_accuracy if validation.contributions else validation.val_accuracy,
            all_off_accuracy=validation.all_off_accuracy,
            host_params=self.host_params,
            total_params=self.model.total_params,
            slots=self._slot_reports(validation),
            interactions=[
                PairInteraction(slot_a=a, slot_b=b, interaction=v) for (a, b), v in validation.interactions.items()
            ],
            signals=signals,
            governor=rollback,
            epoch_seconds=time.perf_counter() - started,
            compute=compute,
        )
        attribution = None
        if epoch == self.episode_length:
            attribution = terminal_attribution(self.model, self.val_batches, self.device, seed=self.seed)
        return EpochOutcome(report=report, rollback=rollback, rollback_events=events, attribution=attribution)

    def _slot_reports(self, validation: ValidationResult) -> list[SlotReport]:
        reports = []
        order = self.slot_ids
        for index, sid in enumerate(order):
            slot = self.model.slot(sid)
            interaction_values = [v for (a, b), v in validation.interactions.items() if sid in (a, b)]
            positive = [v for v in interaction_values if v > 0]
            gradient = self.gradients.report(sid) if slot.has_seed else None
            reports.append(
                SlotReport(
                    slot_id=sid,
                    contribution=validation.contributions.get(sid),
                    solo_on_accuracy=validation.solo_on.get(sid),
                    interaction_sum=sum(positive),
                    boost_received=max(positive, default=0.0),
                    upstream_alpha_sum=sum(self.model.slot(o).alpha for o in order[:index]),
                    downstream_alpha_sum=sum(self.model.slot(o).alpha for o in order[index + 1 :]),
                    gradient_norm=gradient.gradient_norm if gradient else None,
                    gradient_health=gradient.gradient_health if gradient else None,
                    seed_gradient_norm_ratio=gradient.ratio if gradient else None,
                    has_vanishing=gradient.has_vanishing if gradient else None,
                    has_exploding=gradient.has_exploding if gradient else None,
                    seed_param_count=slot.seed_param_count,
                )
            )
        return reports

    # ------------------------------------------------------------------ governor

    def _snapshot(self) -> None:
        # Only the host and fossils belong to Last-Known-Good; a live seed is pruned on rollback anyway (§4.4).
        excluded = [f"slots.{s.slot_id}." for s in self.slot_states if s.stage is not SeedStage.FOSSILIZED]
        self.governor.snapshot(self.model, exclude_prefixes=excluded)
        self.fossilized_since_snapshot = False

    def _rollback(
        self, reason: str, loss: float | None, threshold: float | None
    ) -> tuple[GovernorReport, list[SeedPruned]]:
        """Restore the host, prune every live seed, clear all optimizer state (§4.5–4.6)."""
        self.governor.rollback(self.model)
        pruned: list[str] = []
        events: list[SeedPruned] = []
        states = []
        for state in self.slot_states:
            if state.stage in LIVE_STAGES:
                change = governor_prune(state, reason)
                states.append(change.state)
                events.extend(e for e in change.events if isinstance(e, SeedPruned))
                pruned.append(state.slot_id)
            else:
                states.append(state)
        self.slot_states = states
        self.model.apply_states(states)
        self.seed_optimizers.clear()
        self.host_optimizer = torch.optim.SGD(
            self.model.host_parameters(), lr=self.task.host_lr, momentum=0.9, weight_decay=5e-4
        )
        self.gradients.reset()
        self.counters.rollbacks += 1
        self.counters.pruned += len(pruned)
        return GovernorReport(reason=reason, loss_at_panic=loss, loss_threshold=threshold, pruned_slots=pruned), events

    # ------------------------------------------------------------------ mutations

    def apply(self, directive: StepDirective) -> list[MutationRefused]:
        """Apply the directive's mutations to the model and adopt Kasmina's slot states; refusals revert that slot."""
        refused: list[MutationRefused] = []
        new_states = {s.slot_id: s for s in directive.slots}
        observed = {s.slot_id: s for s in directive.observed_slots}
        # The tick came first (a slot leaving RESETTING is empty again): the model follows it before any mutation.
        if observed:
            try:
                self.model.apply_states(
                    [observed.get(sid, s) for sid, s in zip(self.slot_ids, self.slot_states, strict=True)]
                )
            except SlotSyncError as exc:
                log.error("ticked slot states do not match the model: %s", exc)
        leveled: list[SetInternalLevel] = []
        for mutation in directive.mutations:
            if isinstance(mutation, Germinate):
                try:
                    self.model.germinate(
                        mutation.slot_id, mutation.blueprint, mutation.blend, mutation.alpha_algorithm, mutation.seed_id
                    )
                except (GerminationError, KeyError, ValueError) as exc:
                    refused.append(MutationRefused(slot_id=mutation.slot_id, mutation="germinate", reason=str(exc)))
                    if mutation.slot_id in observed:
                        new_states[mutation.slot_id] = observed[mutation.slot_id]
                    continue
                self.gradients.reset(mutation.slot_id)
                self.counters.germinated += 1
            elif isinstance(mutation, SetInternalLevel):
                reason = self._set_internal_level(mutation)
                if not reason:
                    leveled.append(mutation)
                    continue
                refused.append(MutationRefused(slot_id=mutation.slot_id, mutation="set_internal_level", reason=reason))
                if mutation.slot_id in observed:
                    new_states[mutation.slot_id] = observed[mutation.slot_id]
        states = [new_states.get(sid, SlotState(slot_id=sid)) for sid in self.slot_ids]
        try:
            changed = self.model.apply_states(states)
        except SlotSyncError as exc:
            refused.append(MutationRefused(slot_id=directive.target_slot, mutation="directive", reason=str(exc)))
            for change in reversed(leveled):
                # The observed states hold the old levels; a ladder goes back to its own before the model follows.
                ladder = self.model.slot(change.slot_id).microstructure
                if ladder is not None:
                    ladder.set_internal_level(change.from_level)
            fallback = [observed.get(sid, s) for sid, s in zip(self.slot_ids, self.slot_states, strict=True)]
            changed = self.model.apply_states(fallback)
            states = fallback
        for sid in changed:
            self.seed_optimizers.pop(sid, None)
        for state in states:
            if state.stage not in ACTIVE_STAGES:
                self.seed_optimizers.pop(state.slot_id, None)
        for event in directive.lifecycle_events:
            if isinstance(event, SeedFossilized):
                self.counters.fossilized += 1
                self.fossilized_since_snapshot = True
                # The fossil's optimizer restarts with fresh momentum (reference/kasmina.md §1.6 item 34).
                self.seed_optimizers.pop(event.slot_id, None)
            elif isinstance(event, SeedPruned):
                self.counters.pruned += 1
        self.slot_states = states
        return refused

    def _set_internal_level(self, mutation: SetInternalLevel) -> str:
        """Move a microstructured seed from `from_level` to `to_level`; the refusal reason, or "" when applied.

        The seed optimizer is kept: only the toggled rung's state is deleted, so the other rungs keep their
        momentum (plans/kasmina2-phase0.md §6.5 item 2, Choice 7).
        """
        sid = mutation.slot_id
        if sid not in self.slot_ids:
            return f"slot {sid!r} is not enabled"
        slot = self.model.slot(sid)
        if slot.microstructure is None:
            return f"slot {sid} holds no microstructured seed"
        if mutation.seed_id and mutation.seed_id != slot.seed_id:
            return f"slot {sid} holds seed {slot.seed_id!r}, not {mutation.seed_id!r}"
        if slot.internal_level != mutation.from_level:
            return f"slot {sid} is at level {slot.internal_level}, not {mutation.from_level}"
        try:
            toggled = slot.set_internal_level(mutation.to_level)
        except (SlotSyncError, ValueError) as exc:
            return str(exc)
        optimizer = self.seed_optimizers.get(sid)
        if optimizer is not None:
            for p in toggled:
                optimizer.state.pop(p, None)
        return ""

    def summary(self, run_id: str = "", env_id: int = -1, episode: int = -1) -> EpisodeSummary:
        split = parameter_split(self.model, self.slot_states)
        topology = record_topology(
            self.task.name, self.model, self.slot_states, run_id=run_id, env_id=env_id, episode=episode
        )
        return EpisodeSummary(
            final_accuracy=self.last_accuracy,
            host_params=self.host_params,
            seed_params_added=self.model.active_seed_params,
            seeds_germinated=self.counters.germinated,
            seeds_fossilized=self.counters.fossilized,
            seeds_pruned=self.counters.pruned,
            rollbacks=self.counters.rollbacks,
            committed_params=split.committed,
            uncommitted_params=split.uncommitted,
            dead_params=split.dead,
            topology=topology,
            parameter_epochs=sum(self.ledger.params_in_forward),
            train_flops=sum(self.ledger.train_flops),
            state_sha256=state_digest(self.model.state_dict()),
        )
