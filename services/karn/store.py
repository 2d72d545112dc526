"""The run store: every telemetry event and step record of every run in one SQLite file, plus what Karn derives.

Ingestion is idempotent (events by id, steps by run/env/episode/step), so the store can always be rebuilt by
replaying the TELEMETRY and STEPS streams from their start. Derived tables: runs, per-env epochs, committed
epochs (the barrier of §8.6), seeds and their fates, episode outcomes, policy versions.

At about 490 lines this module is over the ~400 guideline on purpose: `RunStore` is one writer, and every table's
upsert runs inside the one transaction `ingest` opens per batch; split across modules, each table's writes would
lose sight of the transaction and the idempotence rules they share.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from leyline_schemas import (
    INTERNAL_OPS,
    EpisodeOutcome,
    EpochCompleted,
    PolicyLoadFailed,
    PolicyUpdated,
    PPOUpdateCompleted,
    RunFinished,
    RunResumed,
    RunStarted,
    SeedFossilized,
    SeedGateEvaluated,
    SeedGerminated,
    SeedInternalLevelChanged,
    SeedPruned,
    SeedStageChanged,
    StepRecord,
    TelemetryEvent,
    blueprint_name,
    encode,
)
from services.karn import schema
from services.karn.barrier import EnvEpoch
from services.karn.epoch_commits import EpochCommits

#: The pseudo run under which the service harness publishes service lifecycle events.
SYSTEM_RUN = "_system"

Item = TelemetryEvent | StepRecord


def event_kind(event: TelemetryEvent) -> str:
    return str(type(event.payload).__struct_config__.tag)


_STEP_NAMES = (
    "run_id", "env_id", "episode", "step", "arm", "policy_id", "policy_version", "val_accuracy", "val_loss", "op",
    "outcome", "target_slot", "applied", "done", "host_params", "total_params", "received_at", "raw", "attempt",
    "internal_ops_legal",
)  # fmt: skip
_STEP_KEY = ("run_id", "env_id", "episode", "step")
_STEP_UPSERT = (
    f"INSERT INTO steps ({', '.join(_STEP_NAMES)}) VALUES ({', '.join('?' for _ in _STEP_NAMES)}) "
    f"ON CONFLICT ({', '.join(_STEP_KEY)}) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in _STEP_NAMES if name not in _STEP_KEY)
    + " WHERE excluded.attempt > steps.attempt"
)


def internal_ops_legal(record: StepRecord) -> bool:
    """Whether GROW_INTERNAL or SHRINK_INTERNAL was legal in some slot at this step: "ladder-present" (§12.1)."""
    masks = record.directive.masks
    return masks is not None and any(op < len(masks.op) and masks.op[op] for op in INTERNAL_OPS)


def slim_step(record: StepRecord) -> StepRecord:
    """The step as stored: without the observation, masks, pre-action slot states and opaque policy state.

    Those serve the learner and stay in the STEPS stream; Karn shows the post-action slot states.
    """
    directive = record.directive
    decision = directive.decision
    if decision is not None:
        decision = msgspec.structs.replace(decision, policy_state=b"")
    directive = msgspec.structs.replace(
        directive,
        observation=[],
        blueprint_indices=[],
        masks=None,
        policy_state=b"",
        decision=decision,
        observed_slots=[],
    )
    return msgspec.structs.replace(record, directive=directive)


@dataclass
class IngestStats:
    """What one `ingest` call added: new events and steps, duplicates skipped, epochs committed."""

    events: int = 0
    steps: int = 0
    duplicates: int = 0
    committed_epochs: int = 0


class RunStore:
    """The write side of the store; queries live in `services.karn.queries` and read `conn` directly."""

    def __init__(self, path: Path, conn: Any) -> None:
        self.path = path
        self.conn = conn
        self._lock = threading.Lock()
        self._commits = EpochCommits(conn)
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._commits.restore()
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @classmethod
    def open(cls, path: Path | str) -> RunStore:
        """Open or create the store at `path`, migrating an older schema; StoreSchemaError when refused."""
        resolved = Path(path).expanduser().resolve()
        return cls(resolved, schema.connect(resolved))

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- write path --------------------------------------------------------------------------------------------

    def ingest(self, items: Iterable[Item], positions: Mapping[str, int] | None = None) -> IngestStats:
        """Apply a batch in one transaction, recording how far each stream has been consumed."""
        stats = IngestStats()
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                for item in items:
                    added = self._step(item) if isinstance(item, StepRecord) else self._event(item, stats)
                    if not added:
                        stats.duplicates += 1
                    elif isinstance(item, StepRecord):
                        stats.steps += 1
                    else:
                        stats.events += 1
                for stream, seq in (positions or {}).items():
                    self.conn.execute(
                        "INSERT INTO stream_positions VALUES (?, ?) "
                        "ON CONFLICT (stream) DO UPDATE SET seq = max(seq, excluded.seq)",
                        (stream, seq),
                    )
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
        return stats

    def read(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[Any]:
        """Rows of one query, serialised with the writer (the connection is shared across threads)."""
        with self._lock:
            rows: list[Any] = self.conn.execute(sql, params).fetchall()
        return rows

    def count(self, name: str, amount: int = 1) -> None:
        """Add to a named counter (undecodable messages, for one)."""
        with self._lock:
            self.conn.execute(
                "INSERT INTO counters VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                (name, amount),
            )

    def counters(self) -> dict[str, int]:
        with self._lock:
            return {row["name"]: int(row["value"]) for row in self.conn.execute("SELECT name, value FROM counters")}

    def position(self, stream: str) -> int:
        with self._lock:
            row = self.conn.execute("SELECT seq FROM stream_positions WHERE stream = ?", (stream,)).fetchone()
        return int(row["seq"]) if row else 0

    # -- steps -------------------------------------------------------------------------------------------------

    def _step(self, record: StepRecord) -> bool:
        report, directive = record.report, record.directive
        # A restarted episode's later attempt replaces the step; a redelivery or a late earlier attempt does not.
        cursor = self.conn.execute(
            _STEP_UPSERT,
            (
                record.run_id,
                record.env_id,
                record.episode,
                record.step,
                record.arm,
                record.policy_id,
                record.policy_version,
                report.val_accuracy,
                report.val_loss,
                directive.effective_op.name,
                directive.outcome.value,
                directive.target_slot,
                int(record.applied),
                int(record.done),
                report.host_params,
                report.total_params,
                time.time(),
                encode(slim_step(record)),
                record.attempt,
                int(internal_ops_legal(record)),
            ),
        )
        if cursor.rowcount:
            self._touch_run(record.run_id, None)
        return bool(cursor.rowcount)

    # -- events ------------------------------------------------------------------------------------------------

    def _event(self, event: TelemetryEvent, stats: IngestStats) -> bool:
        p = event.payload
        slot_id = getattr(p, "slot_id", None)
        seed_id = getattr(p, "seed_id", None)
        if isinstance(p, SeedGateEvaluated):
            seed_id = self._live_seed(event, p.slot_id)
        cursor = self.conn.execute(
            "INSERT OR IGNORE INTO events (event_id, run_id, kind, source, timestamp, env_id, episode, epoch, "
            "severity, slot_id, seed_id, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event.event_id,
                event.run_id,
                event_kind(event),
                event.source,
                event.timestamp,
                event.env_id,
                event.episode,
                event.epoch,
                event.severity.value,
                slot_id,
                seed_id,
                encode(event),
            ),
        )
        if not cursor.rowcount:
            return False
        if event.run_id != SYSTEM_RUN:
            self._touch_run(event.run_id, event.timestamp)
        if isinstance(p, RunStarted):
            self._run_started(event, p)
        elif isinstance(p, RunFinished):
            self._run_finished(event, p, stats)
        elif isinstance(p, RunResumed):
            self.conn.execute(
                "UPDATE runs SET state = 'running', message = ?, finished_at = NULL WHERE run_id = ?",
                (f"resumed from {p.previous_state}" + (f" by {p.by}" if p.by else ""), event.run_id),
            )
        elif isinstance(p, EpochCompleted):
            self._epoch(event, p, stats)
        elif isinstance(p, EpisodeOutcome):
            self._episode(event, p)
        elif isinstance(p, SeedGerminated | SeedStageChanged | SeedFossilized | SeedPruned):
            self._seed(event, p)
        elif isinstance(p, SeedInternalLevelChanged):
            self._level(event, p)
        elif isinstance(p, PPOUpdateCompleted | PolicyUpdated | PolicyLoadFailed):
            self._policy(event, p)
        return True

    def _touch_run(self, run_id: str, timestamp: float | None) -> None:
        self.conn.execute(
            "INSERT INTO runs (run_id, last_event_at) VALUES (?, ?) ON CONFLICT (run_id) DO UPDATE SET "
            "last_event_at = max(coalesce(last_event_at, excluded.last_event_at), "
            "coalesce(excluded.last_event_at, last_event_at))",
            (run_id, timestamp),
        )

    def _run_started(self, event: TelemetryEvent, p: RunStarted) -> None:
        self.conn.execute(
            "UPDATE runs SET task = ?, n_envs = ?, episodes = ?, episode_length = ?, slot_ids = ?, policy_id = ?, "
            "reward_mode = ?, started_at = ? WHERE run_id = ?",
            (
                p.task,
                p.n_envs,
                p.episodes,
                p.episode_length,
                json.dumps(p.slot_ids),
                p.policy_id,
                p.reward_mode.value,
                event.timestamp,
                event.run_id,
            ),
        )
        self._commits.run_started(event.run_id, p.n_envs, p.episodes)

    def _run_finished(self, event: TelemetryEvent, p: RunFinished, stats: IngestStats) -> None:
        self.conn.execute(
            "UPDATE runs SET state = ?, message = ?, finished_at = ? WHERE run_id = ?",
            (p.state, p.message, event.timestamp, event.run_id),
        )
        stats.committed_epochs += self._commits.run_finished(event.run_id)

    def _epoch(self, event: TelemetryEvent, p: EpochCompleted, stats: IngestStats) -> None:
        if event.env_id is None or event.episode is None or event.epoch is None:
            return
        self.conn.execute(
            "INSERT OR REPLACE INTO env_epochs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event.run_id,
                event.env_id,
                event.episode,
                event.epoch,
                p.val_accuracy,
                p.val_loss,
                p.train_accuracy,
                p.train_loss,
                p.op,
                p.target_slot,
                p.outcome,
                p.policy_id,
                p.policy_version,
                p.host_params,
                p.total_params,
                json.dumps(p.slots),
                json.dumps(p.contributions),
                event.timestamp,
            ),
        )
        report = EnvEpoch(event.env_id, p.val_accuracy, p.val_loss, p.train_accuracy, p.train_loss)
        stats.committed_epochs += self._commits.add(event.run_id, event.episode, event.epoch, report)

    def _episode(self, event: TelemetryEvent, p: EpisodeOutcome) -> None:
        ratio = (p.host_params + p.seed_params_added) / p.host_params if p.host_params > 0 else None
        self.conn.execute(
            "INSERT OR REPLACE INTO episodes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event.run_id,
                p.env_id,
                p.episode,
                p.final_accuracy,
                p.host_params,
                p.seed_params_added,
                ratio,
                p.seeds_germinated,
                p.seeds_fossilized,
                p.seeds_pruned,
                p.episode_return,
                p.reward_mode.value,
                p.length,
                p.policy_id,
                p.rollbacks,
                event.timestamp,
            ),
        )

    def _live_seed(self, event: TelemetryEvent, slot_id: str) -> str | None:
        row = self.conn.execute(
            "SELECT seed_id FROM seeds WHERE run_id = ? AND env_id IS ? AND episode IS ? AND slot_id = ? "
            "ORDER BY germinated_epoch DESC LIMIT 1",
            (event.run_id, event.env_id, event.episode, slot_id),
        ).fetchone()
        return str(row["seed_id"]) if row else None

    def _seed(self, event: TelemetryEvent, p: SeedGerminated | SeedStageChanged | SeedFossilized | SeedPruned) -> None:
        if event.env_id is None or event.episode is None:
            return
        key = (event.run_id, event.env_id, event.episode, p.seed_id)
        if isinstance(p, SeedGerminated):
            self.conn.execute(
                "INSERT OR REPLACE INTO seeds (run_id, env_id, episode, seed_id, slot_id, blueprint, stage, "
                "germinated_epoch, params, internal_level, internal_max_level) "
                "VALUES (?, ?, ?, ?, ?, ?, 'GERMINATED', ?, ?, ?, ?)",
                (
                    *key,
                    p.slot_id,
                    blueprint_name(p.blueprint),
                    event.epoch,
                    p.params,
                    p.internal_level,
                    p.internal_max_level,
                ),
            )
        elif isinstance(p, SeedStageChanged):
            blending = p.accuracy_delta if p.from_stage == "BLENDING" else None
            self.conn.execute(
                "UPDATE seeds SET stage = ?, blending_delta = coalesce(?, blending_delta) "
                "WHERE run_id = ? AND env_id = ? AND episode = ? AND seed_id = ?",
                (p.to_stage, blending, *key),
            )
        else:
            stage = "FOSSILIZED" if isinstance(p, SeedFossilized) else "PRUNED"
            params = p.params_added if isinstance(p, SeedFossilized) else None
            # A fossil's level is frozen (custody); a pruned seed keeps the level its last level event set.
            level = p.internal_level if isinstance(p, SeedFossilized) else None
            reason = p.reason if isinstance(p, SeedPruned) else ""
            self.conn.execute(
                "INSERT INTO seeds (run_id, env_id, episode, seed_id, slot_id, blueprint, stage, ended_epoch, "
                "params, improvement, counterfactual, epochs_total, prune_reason, internal_level) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, coalesce(?, 0), ?, ?, ?, ?, coalesce(?, 0)) ON CONFLICT DO UPDATE SET "
                "stage = excluded.stage, ended_epoch = excluded.ended_epoch, "
                "params = coalesce(?, params), improvement = excluded.improvement, "
                "counterfactual = excluded.counterfactual, epochs_total = excluded.epochs_total, "
                "prune_reason = excluded.prune_reason, internal_level = coalesce(?, internal_level)",
                (
                    *key,
                    p.slot_id,
                    blueprint_name(p.blueprint),
                    stage,
                    event.epoch,
                    params,
                    p.improvement,
                    p.counterfactual,
                    p.epochs_total,
                    reason,
                    level,
                    params,
                    level,
                ),
            )

    def _level(self, event: TelemetryEvent, p: SeedInternalLevelChanged) -> None:
        """A level change: the seed's new level and active parameters; a change against the last one is a reversal."""
        if event.env_id is None or event.episode is None:
            return
        delta = p.to_level - p.from_level
        self.conn.execute(
            "UPDATE seeds SET internal_level = ?, internal_max_level = ?, params = ?, "
            "level_changes = level_changes + 1, level_reversals = level_reversals + (last_level_delta * ? < 0), "
            "last_level_delta = ? WHERE run_id = ? AND env_id = ? AND episode = ? AND seed_id = ?",
            (
                p.to_level,
                p.max_level,
                p.active_params,
                delta,
                delta,
                event.run_id,
                event.env_id,
                event.episode,
                p.seed_id,
            ),
        )

    def _policy(self, event: TelemetryEvent, p: PPOUpdateCompleted | PolicyUpdated | PolicyLoadFailed) -> None:
        self.conn.execute(
            "INSERT INTO policy_versions (policy_id, version, run_id, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            (p.policy_id, p.version, None if event.run_id == SYSTEM_RUN else event.run_id, event.timestamp),
        )
        key = (p.policy_id, p.version)
        if isinstance(p, PolicyUpdated):
            self.conn.execute(
                "UPDATE policy_versions SET sha256 = ?, updated_at = ? WHERE policy_id = ? AND version = ?",
                (p.sha256, event.timestamp, *key),
            )
        elif isinstance(p, PolicyLoadFailed):
            self.conn.execute(
                "UPDATE policy_versions SET load_failure = ? WHERE policy_id = ? AND version = ?", (p.reason, *key)
            )
        else:
            self.conn.execute(
                "UPDATE policy_versions SET policy_loss = ?, value_loss = ?, entropy = ?, approx_kl = ?, "
                "clip_fraction = ?, explained_variance = ?, head_entropies = ?, version_lag_mean = ?, steps = ?, "
                "epochs_run = ?, skipped = ?, run_id = coalesce(run_id, ?) WHERE policy_id = ? AND version = ?",
                (
                    p.policy_loss,
                    p.value_loss,
                    p.entropy,
                    p.approx_kl,
                    p.clip_fraction,
                    p.explained_variance,
                    json.dumps(p.head_entropies),
                    p.version_lag_mean,
                    p.steps,
                    p.epochs_run,
                    int(p.skipped),
                    None if event.run_id == SYSTEM_RUN else event.run_id,
                    *key,
                ),
            )
