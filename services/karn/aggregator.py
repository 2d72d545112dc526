"""Sanctum's aggregator: one run's events and step records in, one immutable snapshot per frame out.

It is pure (no bus, no clock of its own) and thread-safe: a feed thread applies messages as they arrive while
the UI thread asks for snapshots on a timer, so a slow terminal drops frames, never messages.
"""

from __future__ import annotations

import json
import statistics
import threading
from collections import Counter, deque
from dataclasses import dataclass

import msgspec

from leyline_schemas import (
    HEAD_NAMES,
    EpisodeOutcome,
    EpochCompleted,
    GovernorRollback,
    MutationRefused,
    PolicyLoadFailed,
    PolicyUpdated,
    PPOUpdateCompleted,
    RunFinished,
    RunResumed,
    RunSpec,
    RunStarted,
    SeedFossilized,
    Severity,
    ShapleyComputed,
    StepRecord,
    TelemetryEvent,
)
from services.karn.barrier import CommittedEpoch, EnvEpoch, EpochBarrier, envs_in_round
from services.karn.decision_cards import DecisionCards
from services.karn.env_state import EnvState
from services.karn.live_log import describe, stamp, where
from services.karn.pareto import OutcomePoint, hypervolume, pareto_frontier
from services.karn.policy_line import PolicyLine
from services.karn.sanctum.thresholds import APPROX_KL, ENTROPY
from services.karn.snapshot import (
    Anomalies,
    EnvDetail,
    EnvRow,
    EpisodeScore,
    HeaderView,
    LogLine,
    RunInfo,
    SanctumSnapshot,
    Scoreboard,
    freshness,
)

LOG_LINES = 100
RATE_WINDOW = 10.0


@dataclass
class EpisodeTrack:
    env_id: int
    episode: int
    peak: float = float("-inf")
    peak_epoch: int = 0
    final: float = 0.0
    growth_ratio: float = 1.0
    fossilized: int = 0
    end_reward: float | None = None
    finished: bool = False


class SanctumAggregator:
    """Turns one run's messages into SanctumSnapshots; `apply_*` from any thread, `snapshot` from another."""

    def __init__(self, run_id: str, source: str = "", replay: bool = False) -> None:
        self.run_id = run_id
        self.source = source
        self.replay = replay
        self._lock = threading.Lock()
        self._started: RunStarted | None = None
        self._spec: RunSpec | None = None
        self._state = "waiting"
        self._first_ts: float | None = None
        self._last_ts: float | None = None
        self._epoch_times: deque[float] = deque(maxlen=512)
        self._epochs_seen = 0
        self._envs: dict[int, EnvState] = {}
        self._episodes: dict[tuple[int, int], EpisodeTrack] = {}
        self._outcomes: dict[tuple[int, int], EpisodeOutcome] = {}
        self._policies: dict[str, PolicyLine] = {}
        self._decided: set[tuple[int, int, int]] = set()
        self._log: deque[LogLine] = deque(maxlen=LOG_LINES)
        self._seq = 0
        self._barrier: EpochBarrier | None = None
        self._counts: Counter[str] = Counter()
        self._policy_events: set[str] = set()
        self._cards = DecisionCards()

    # -- input -------------------------------------------------------------------------------------------------

    def apply_spec(self, spec: RunSpec) -> None:
        with self._lock:
            self._spec = spec
            for arm in spec.arms:
                self._policy(arm.policy_id)

    def count_undecodable(self) -> None:
        with self._lock:
            self._counts["undecodable"] += 1

    def apply_event(self, event: TelemetryEvent) -> None:
        p = event.payload
        policy_event = isinstance(p, PPOUpdateCompleted | PolicyUpdated | PolicyLoadFailed)
        with self._lock:
            ours = policy_event and getattr(p, "policy_id", "") in self._policies
            if event.run_id != self.run_id and not ours:
                return
            if policy_event:
                # Policy events reach a live feed twice (the run's subjects and the policy subjects): count once.
                if event.event_id in self._policy_events:
                    return
                self._policy_events.add(event.event_id)
            self._first_ts = min(self._first_ts or event.timestamp, event.timestamp)
            self._last_ts = max(self._last_ts or event.timestamp, event.timestamp)
            if isinstance(p, EpochCompleted):
                self._epoch(event, p)
                return
            if isinstance(p, RunStarted):
                self._started = p
                self._state = "running"
                for policy_id in p.policy_id.split(","):
                    if policy_id:
                        self._policy(policy_id)
            elif isinstance(p, RunResumed):
                self._state = "running"
            elif isinstance(p, RunFinished):
                self._state = p.state
                if self._barrier is not None:
                    for committed in self._barrier.flush():
                        self._log_epoch(committed, event)
            elif isinstance(p, EpisodeOutcome):
                self._outcome(p)
            elif isinstance(p, GovernorRollback):
                self._counts["rollbacks"] += 1
                if event.env_id is not None:
                    self._env(event.env_id).rollback_epoch = event.epoch or 0
            elif isinstance(p, ShapleyComputed) and event.env_id is not None:
                env = self._env(event.env_id)
                env.shapley, env.shapley_episode = p, event.episode
            elif isinstance(p, MutationRefused):
                self._counts["refusals"] += 1
            elif isinstance(p, SeedFossilized) and event.env_id is not None and event.episode is not None:
                self._track(event.env_id, event.episode).fossilized += 1
            elif isinstance(p, PPOUpdateCompleted):
                line = self._policy(p.policy_id)
                line.updates.append(p)
                line.version = max(line.version, p.version)
            elif isinstance(p, PolicyUpdated):
                self._policy(p.policy_id).version = max(self._policy(p.policy_id).version, p.version)
            elif isinstance(p, PolicyLoadFailed):
                self._policy(p.policy_id).load_failure = f"v{p.version}: {p.reason}"
                self._counts["load_failures"] += 1
            text = describe(event)
            if text is not None:
                place = where(event, with_run=False)
                where_text = f"{stamp(event)} {place} {text}" if place else f"{stamp(event)} {text}"
                self._append_log(where_text, event.severity.value, event.env_id)

    def apply_step(self, record: StepRecord) -> None:
        with self._lock:
            if record.run_id != self.run_id:
                return
            env = self._env(record.env_id)
            env.observe_step(record)
            line = self._policy(record.policy_id)
            line.version = max(line.version, record.policy_version)
            line.acted_versions.append(record.policy_version)
            decision = record.directive.decision
            if decision is not None:
                line.decision_entropies.append(tuple(getattr(decision.entropies, h) for h in HEAD_NAMES))
            op = record.directive.effective_op.name
            self._count_action(record.policy_id, record.env_id, record.episode, record.step, op)
            self._cards.offer(record)

    # -- internals (called under the lock) ---------------------------------------------------------------------

    def _env(self, env_id: int) -> EnvState:
        if env_id not in self._envs:
            self._envs[env_id] = EnvState(env_id, max_epochs=self._episode_length())
        return self._envs[env_id]

    def _episode_length(self) -> int:
        if self._started is not None:
            return self._started.episode_length
        return self._spec.episode_length if self._spec is not None else 0

    def _policy(self, policy_id: str) -> PolicyLine:
        if policy_id not in self._policies:
            self._policies[policy_id] = PolicyLine(policy_id)
        return self._policies[policy_id]

    def _track(self, env_id: int, episode: int) -> EpisodeTrack:
        key = (env_id, episode)
        if key not in self._episodes:
            self._episodes[key] = EpisodeTrack(env_id, episode)
        return self._episodes[key]

    def _count_action(self, policy_id: str, env_id: int, episode: int, epoch: int, op: str) -> None:
        key = (env_id, episode, epoch)
        if policy_id and key not in self._decided:
            self._decided.add(key)
            self._policy(policy_id).actions[op] += 1

    def _shape(self) -> tuple[int, int] | None:
        if self._started is not None:
            return self._started.n_envs, self._started.episodes
        if self._spec is not None:
            return self._spec.n_envs, self._spec.episodes
        return None

    def _epoch(self, event: TelemetryEvent, p: EpochCompleted) -> None:
        if event.env_id is None or event.episode is None or event.epoch is None:
            return
        self._epochs_seen += 1
        self._epoch_times.append(event.timestamp)
        env = self._env(event.env_id)
        env.max_epochs = env.max_epochs or self._episode_length()
        env.observe_epoch(event.episode, event.epoch, p)
        track = self._track(event.env_id, event.episode)
        if p.val_accuracy > track.peak:
            track.peak, track.peak_epoch = p.val_accuracy, event.epoch
        track.final = p.val_accuracy
        if p.host_params > 0:
            track.growth_ratio = p.total_params / p.host_params
        self._count_action(p.policy_id, event.env_id, event.episode, event.epoch, p.op)
        shape = self._shape()
        if shape is None:
            return
        n_envs, episodes = shape
        if self._barrier is None:
            self._barrier = EpochBarrier(lambda r: envs_in_round(n_envs, episodes, r))
        report = EnvEpoch(event.env_id, p.val_accuracy, p.val_loss, p.train_accuracy, p.train_loss)
        for committed in self._barrier.add(event.episode // n_envs, event.epoch, report):
            self._log_epoch(committed, event)

    def _log_epoch(self, c: CommittedEpoch, event: TelemetryEvent) -> None:
        partial = " (partial)" if c.partial else ""
        self._append_log(
            f"{stamp(event)} round {c.round} epoch {c.epoch:>3}: mean acc {c.val_accuracy:.2f}% over "
            f"{c.n_reported}/{c.n_expected} envs{partial}",
            Severity.DEBUG.value,
            None,
        )

    def _outcome(self, p: EpisodeOutcome) -> None:
        key = (p.env_id, p.episode)
        if key in self._outcomes:
            return
        self._outcomes[key] = p
        env = self._env(p.env_id)
        env.returns.append(p.episode_return)
        env.episodes_done += 1
        track = self._track(p.env_id, p.episode)
        track.final = p.final_accuracy
        track.end_reward = p.episode_return
        track.finished = True
        track.fossilized = max(track.fossilized, p.seeds_fossilized)
        if p.host_params > 0:
            track.growth_ratio = (p.host_params + p.seed_params_added) / p.host_params

    def _append_log(self, text: str, severity: str, env_id: int | None) -> None:
        self._seq += 1
        self._log.append(LogLine(self._seq, text, severity, env_id))

    # -- output ------------------------------------------------------------------------------------------------

    def snapshot(self, now: float) -> SanctumSnapshot:
        """The frame for wall-clock time `now` (data age is measured against the events' own timestamps)."""
        with self._lock:
            slot_ids = self._slot_ids()
            envs = tuple(self._envs[e].row(slot_ids) for e in sorted(self._envs))
            return SanctumSnapshot(
                header=self._header(now),
                anomalies=self._anomalies(envs),
                envs=envs,
                scoreboard=self._scoreboard(),
                policies=tuple(self._policies[p].view() for p in sorted(self._policies)),
                log=tuple(self._log),
                slot_ids=tuple(slot_ids),
                decisions=self._cards.cards(now),
            )

    def run_info(self) -> RunInfo:
        """Every field of the run's RunSpec (a live feed reads it from the bus), else of its RunStarted event."""
        with self._lock:
            source: RunSpec | RunStarted | None = self._spec or self._started
            if source is None:
                return RunInfo(self.run_id, "nothing received yet", ())
            what = "RunSpec" if isinstance(source, RunSpec) else "RunStarted (the full RunSpec lives on the bus)"
            values = msgspec.to_builtins(source)
            names = [f.name for f in msgspec.structs.fields(source)]
            return RunInfo(self.run_id, what, tuple((n, json.dumps(values.get(n), ensure_ascii=False)) for n in names))

    def env_detail(self, env_id: int) -> EnvDetail | None:
        with self._lock:
            env = self._envs.get(env_id)
            return env.detail(self._slot_ids()) if env is not None else None

    def _slot_ids(self) -> list[str]:
        if self._started is not None and self._started.slot_ids:
            return list(self._started.slot_ids)
        if self._spec is not None and self._spec.slots:
            return list(self._spec.slots)
        seen: dict[str, None] = {}
        for env in self._envs.values():
            seen.update(dict.fromkeys(env.slots))
        return sorted(seen)

    def _mode(self) -> str:
        if self._spec is not None and len(self._spec.arms) > 1:
            return "A/B " + " vs ".join(f"{a.arm_id}:{a.policy_id}/{a.reward_mode.value}" for a in self._spec.arms)
        if self._spec is not None and self._spec.arms:
            return f"reward {self._spec.arms[0].reward_mode.value}"
        return f"reward {self._started.reward_mode.value}" if self._started is not None else "reward ?"

    def _header(self, now: float) -> HeaderView:
        age = None if self._last_ts is None else max(0.0, now - self._last_ts)
        rate = None
        if self._epoch_times:
            if self.replay or self._state not in ("running", "waiting"):
                span = max(self._epoch_times) - (self._first_ts or min(self._epoch_times))
                rate = self._epochs_seen / span if span > 0 else None
            else:
                latest = max(self._epoch_times)
                recent = [t for t in self._epoch_times if t > latest - RATE_WINDOW]
                span = min(RATE_WINDOW, latest - min(recent)) if len(recent) > 1 else 0.0
                rate = (len(recent) - 1) / span if span > 0 else None
        total = self._started.episodes if self._started else (self._spec.episodes if self._spec else 0)
        runtime = None if self._first_ts is None or self._last_ts is None else self._last_ts - self._first_ts
        return HeaderView(
            run_id=self.run_id,
            task=self._started.task if self._started else (self._spec.task if self._spec else "?"),
            mode=self._mode(),
            state=self._state,
            freshness="REPLAY" if self.replay else freshness(age),
            data_age=age,
            episodes_done=len(self._outcomes),
            episodes_total=total,
            epochs_per_second=rate,
            runtime=runtime,
            source=self.source,
        )

    def _anomalies(self, rows: tuple[EnvRow, ...]) -> Anomalies:
        ppo_issues = sum(
            1
            for line in self._policies.values()
            if line.updates
            and "critical" in (ENTROPY.grade(line.updates[-1].entropy), APPROX_KL.grade(line.updates[-1].approx_kl))
        )
        return Anomalies(
            stalled=sum(1 for e in rows if e.status == "stalled"),
            degraded=sum(1 for e in rows if e.status == "degraded"),
            vanishing=sum(1 for e in rows for s in e.slots if s.occupied and s.vanishing),
            exploding=sum(1 for e in rows for s in e.slots if s.occupied and s.exploding),
            rollbacks=self._counts["rollbacks"],
            ppo_issues=ppo_issues,
            load_failures=self._counts["load_failures"],
            refusals=self._counts["refusals"],
            undecodable=self._counts["undecodable"],
        )

    def _scoreboard(self) -> Scoreboard:
        scores = [
            EpisodeScore(
                env_id=t.env_id,
                episode=t.episode,
                peak=t.peak,
                peak_epoch=t.peak_epoch,
                final=t.final,
                growth_ratio=t.growth_ratio,
                end_reward=t.end_reward,
                fossilized=t.fossilized,
                finished=t.finished,
            )
            for t in self._episodes.values()
            if t.peak != float("-inf")
        ]
        best = sorted(scores, key=lambda s: (-s.peak, s.episode))[:5]
        worst = sorted((s for s in scores if s.regression > 0), key=lambda s: (-s.regression, s.episode))[:5]
        points = [
            OutcomePoint(o.final_accuracy, (o.host_params + o.seed_params_added) / o.host_params, o.env_id, o.episode)
            for o in self._outcomes.values()
            if o.host_params > 0
        ]
        frontier = pareto_frontier(points)
        finals = [o.final_accuracy for o in self._outcomes.values()]
        return Scoreboard(
            best=tuple(best),
            worst=tuple(worst),
            episodes_finished=len(self._outcomes),
            mean_final=statistics.fmean(finals) if finals else None,
            hypervolume=hypervolume(frontier) if frontier else None,
            frontier_size=len(frontier),
        )
