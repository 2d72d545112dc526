"""The ladder report of a run (plans/kasmina2-phase0.md §9 items 3–5, §12.1): how often the policy changed a seed's
level when it could, what it germinated, how each ladder seed's level moved, and what followed a level change
compared with a WAIT.

Everything is derived from stored step records and `seed_internal_level_changed` events, so a store rebuilt from
the log reports the same (Choice 12). Post-op deltas are observational only: WAITs cluster near good states and
ops near bad ones, which flatters the ops (§9 item 4).
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from leyline_schemas import (
    INTERNAL_OP_STAGES,
    INTERNAL_OPS,
    SEED_INTERNALS,
    BlueprintAction,
    DecisionOutcome,
    LifecycleOp,
    SeedInternalKind,
    SeedInternalLevelChanged,
    StepRecord,
    TelemetryEvent,
    blueprint_name,
    decode,
)
from services.karn.jsonsafe import json_ready
from services.karn.queries import require_run
from services.karn.store import RunStore
from services.observation.level_trajectory import (
    THRASH_REVERSAL_RATE,
    density_band,
    direction,
    level_trajectory_stats,
    reversal_band,
    settled,
)

#: Δc_k and Δacc_k are taken k = 1, 2, 3 epochs after the step (§9 item 4).
HORIZONS = (1, 2, 3)
#: The WAIT baseline is trusted only from this many samples (§9 item 4).
WAIT_BASELINE_MIN_SAMPLES = 10
#: A6 counts thrash among seeds with at least this many ops, and the median reversal rate over seeds with two.
THRASH_MIN_OPS = 4
LIVE_STAGES = frozenset(stage.name for stage in INTERNAL_OP_STAGES)
LADDER_BLUEPRINTS = frozenset(blueprint_name(b) for b in SEED_INTERNALS)
_BATCH = 2000


@dataclass(frozen=True)
class _Step:
    """What the report needs of one step record, so an episode's records are not all held at once."""

    step: int
    op: LifecycleOp
    sampled: bool
    legal: bool
    applied: bool
    invalid: bool
    target_slot: str
    accuracy: float
    contributions: dict[str, float | None]
    seeds: dict[str, str]
    live_ladders: frozenset[str]
    germinated: str


def _step(record: StepRecord, legal: bool) -> _Step:
    d = record.directive
    after = {s.slot_id: s for s in d.slots}
    applied = d.outcome is DecisionOutcome.APPLIED and record.applied
    germinated = ""
    if applied and d.effective_op is LifecycleOp.GERMINATE:
        target = after.get(d.target_slot)
        germinated = blueprint_name(target.blueprint if target is not None else d.raw_action.blueprint)
    return _Step(
        step=record.step,
        op=d.effective_op,
        sampled=d.decision is not None,
        legal=legal,
        applied=applied,
        invalid=d.outcome is DecisionOutcome.INVALID_ACTION,
        target_slot=d.target_slot,
        accuracy=record.report.val_accuracy,
        contributions={r.slot_id: r.contribution for r in record.report.slots},
        seeds={slot: s.seed_id for slot, s in after.items()},
        live_ladders=frozenset(
            slot
            for slot, s in after.items()
            if s.internal_kind is not SeedInternalKind.NONE and s.stage in INTERNAL_OP_STAGES
        ),
        germinated=germinated,
    )


def _episodes(store: RunStore, run_id: str, first: int, last: int) -> Iterator[list[_Step]]:
    """Each episode's steps in order, read a batch at a time."""
    key, current = (-1, -1, -1), (-1, -1)
    steps: list[_Step] = []
    while True:
        rows = store.read(
            "SELECT env_id, episode, step, internal_ops_legal, raw FROM steps WHERE run_id = ? AND episode BETWEEN ? "
            "AND ? AND (env_id, episode, step) > (?, ?, ?) ORDER BY env_id, episode, step LIMIT ?",
            (run_id, first, last, *key, _BATCH),
        )
        for row in rows:
            if (row["env_id"], row["episode"]) != current:
                if steps:
                    yield steps
                current, steps = (row["env_id"], row["episode"]), []
            steps.append(_step(decode(row["raw"], StepRecord), bool(row["internal_ops_legal"])))
        if len(rows) < _BATCH:
            break
        key = (int(rows[-1]["env_id"]), int(rows[-1]["episode"]), int(rows[-1]["step"]))
    if steps:
        yield steps


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass
class _Deltas:
    """Δc_k and Δacc_k samples of one kind of step (an op or WAIT), per horizon k."""

    contribution: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    accuracy: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))

    def add(self, steps: dict[int, _Step], t: _Step, slot: str) -> None:
        base = t.contributions.get(slot)
        for k in HORIZONS:
            later, last_trained = steps.get(t.step + k), steps.get(t.step + k - 1)
            # The epoch t + k must have trained the same seed the step acted on (not a regerminated one).
            if later is None or last_trained is None or last_trained.seeds.get(slot) != t.seeds.get(slot):
                continue
            c = later.contributions.get(slot)
            if base is not None and c is not None and math.isfinite(base) and math.isfinite(c):
                self.contribution[k].append(c - base)
                self.accuracy[k].append(later.accuracy - t.accuracy)

    def summary(self, k: int) -> dict[str, Any]:
        return {
            "n": len(self.contribution[k]),
            "delta_contribution": _mean(self.contribution[k]),
            "delta_accuracy": _mean(self.accuracy[k]),
        }


def _post_op(deltas: dict[str, _Deltas]) -> list[dict[str, Any]]:
    rows = []
    for k in HORIZONS:
        row: dict[str, Any] = {"k": k, **{kind: d.summary(k) for kind, d in deltas.items()}}
        internal, wait = row["internal"], row["wait"]
        row["wait_baseline_trusted"] = wait["n"] >= WAIT_BASELINE_MIN_SAMPLES
        for name in ("delta_contribution", "delta_accuracy"):
            ops, base = internal[name], wait[name]
            row[f"{name}_vs_wait"] = None if ops is None or base is None else ops - base
        rows.append(row)
    return rows


def _ladder_seeds(store: RunStore, run_id: str, first: int, last: int) -> list[dict[str, Any]]:
    """Each ladder seed's life with its level-trajectory statistics (§9 item 3)."""
    seeds = store.read(
        f"SELECT * FROM seeds WHERE run_id = ? AND episode BETWEEN ? AND ? "
        f"AND blueprint IN ({', '.join('?' for _ in LADDER_BLUEPRINTS)}) ORDER BY env_id, episode, germinated_epoch",
        (run_id, first, last, *sorted(LADDER_BLUEPRINTS)),
    )
    changes: dict[tuple[int, int, str], list[tuple[int, int]]] = defaultdict(list)
    for row in store.read(
        "SELECT raw FROM events WHERE run_id = ? AND kind = 'seed_internal_level_changed' AND episode BETWEEN ? AND ? "
        "ORDER BY seq",
        (run_id, first, last),
    ):
        event = decode(row["raw"], TelemetryEvent)
        p = event.payload
        assert isinstance(p, SeedInternalLevelChanged)
        key = (event.env_id or 0, event.episode or 0, p.seed_id)
        changes[key].append((event.epoch or 0, direction(p.from_level, p.to_level)))
    stages: dict[tuple[int, int], list[tuple[int, dict[str, str]]]] = defaultdict(list)
    for row in store.read(
        "SELECT env_id, episode, epoch, slots FROM env_epochs WHERE run_id = ? AND episode BETWEEN ? AND ?",
        (run_id, first, last),
    ):
        stages[(row["env_id"], row["episode"])].append((row["epoch"], json.loads(row["slots"])))
    result = []
    for seed in seeds:
        moves = changes.get((seed["env_id"], seed["episode"], seed["seed_id"]), [])
        start = seed["germinated_epoch"] if seed["germinated_epoch"] is not None else -1
        end = seed["ended_epoch"] if seed["ended_epoch"] is not None else math.inf
        slot, mark = seed["slot_id"], f":{seed['blueprint']}"
        live = {
            epoch
            for epoch, slots in stages[(seed["env_id"], seed["episode"])]
            if start <= epoch <= end and slots.get(slot, "").endswith(mark) and slots[slot].split(":")[0] in LIVE_STAGES
        }
        live |= {epoch for epoch, _ in moves}  # an op acts only in a live epoch, even one whose report was lost
        stats = level_trajectory_stats([d for _, d in moves], len(live))
        result.append(
            {
                **{k: seed[k] for k in ("env_id", "episode", "seed_id", "slot_id", "blueprint", "stage")},
                **{k: seed[k] for k in ("internal_level", "internal_max_level", "level_changes", "level_reversals")},
                "ops": stats.ops,
                "reversals": stats.reversals,
                "reversal_rate": stats.reversal_rate,
                "net_level_change": stats.net_level_change,
                "live_epochs": len(live),
                "density": stats.density,
                "settled": settled([e for e, _ in moves], sorted(live)),
                "density_band": density_band(stats.density),
                "reversal_band": reversal_band(stats.reversal_rate),
            }
        )
    return result


def _thrash(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """A6's figures over the ladder seeds (§12.2 item 6)."""
    turned = [s["reversal_rate"] for s in seeds if s["ops"] >= 2]
    busy = [s for s in seeds if s["ops"] >= THRASH_MIN_OPS]
    moved = [s for s in seeds if s["ops"] >= 1]
    return {
        "ladder_seeds": len(seeds),
        "median_reversal_rate": statistics.median(turned) if turned else None,
        "thrash_share": _share(sum(1 for s in busy if s["reversal_rate"] > THRASH_REVERSAL_RATE), len(busy)),
        "mean_density": _mean([s["density"] for s in seeds]),
        "settled_share": _share(sum(1 for s in moved if s["settled"]), len(moved)),
    }


def ladder_report(
    store: RunStore, run_id: str, first_episode: int = 0, last_episode: int | None = None
) -> dict[str, Any]:
    """Usage share U, blueprint shares and H, invalid-action rate, per-seed thrash and post-op deltas (§9.5, §12.1),
    over episodes `first_episode` … `last_episode` (inclusive; default all)."""
    require_run(store, run_id)
    first, last = first_episode, last_episode if last_episode is not None else 2**63 - 1
    ops: Counter[str] = Counter()
    germinated: Counter[str] = Counter()
    sampled = present = internal = acted = invalid = applied_internal = total = 0
    deltas = {"grow_internal": _Deltas(), "shrink_internal": _Deltas(), "internal": _Deltas(), "wait": _Deltas()}
    for episode in _episodes(store, run_id, first, last):
        by_step = {s.step: s for s in episode}
        for s in episode:
            total += 1
            if s.germinated:
                germinated[s.germinated] += 1
            if s.applied and s.op in INTERNAL_OPS:
                applied_internal += 1
                deltas[s.op.name.lower()].add(by_step, s, s.target_slot)
                deltas["internal"].add(by_step, s, s.target_slot)
            if not s.sampled:
                continue
            sampled += 1
            ops[s.op.name] += 1
            invalid += s.invalid
            if s.legal:
                present += 1
                internal += s.op in INTERNAL_OPS
                acted += s.op is not LifecycleOp.WAIT
            if s.op is LifecycleOp.WAIT:
                for slot in s.live_ladders:
                    deltas["wait"].add(by_step, s, slot)
    (events,) = store.read(
        "SELECT count(*) AS n FROM events WHERE run_id = ? AND kind = 'seed_internal_level_changed' "
        "AND episode BETWEEN ? AND ?",
        (run_id, first, last),
    )
    seeds = _ladder_seeds(store, run_id, first, last)
    all_germinated = sum(germinated.values())
    heavy = blueprint_name(BlueprintAction.CONV_HEAVY)
    report = {
        "run_id": run_id,
        "first_episode": first_episode,
        "last_episode": last_episode,
        "steps": total,
        "sampled_decisions": sampled,
        "ladder_present_steps": present,
        "usage": {"internal_ops": internal, "non_wait_ops": acted, "share": _share(internal, acted)},
        "ops": dict(sorted(ops.items())),
        "invalid_actions": invalid,
        "invalid_action_rate": _share(invalid, sampled),
        "applied_internal_ops": applied_internal,
        "level_events": int(events["n"]),
        "germinations": dict(sorted(germinated.items())),
        "blueprint_shares": {b: n / all_germinated for b, n in sorted(germinated.items())},
        "conv_heavy_share": _share(germinated[heavy], all_germinated),
        "thrash": _thrash(seeds),
        "seeds": seeds,
        "post_op": _post_op(deltas),
    }
    ready: dict[str, Any] = json_ready(report)
    return ready
