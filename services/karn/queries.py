"""Read queries over the run store, as JSON-ready dicts: what the HTTP API, the export and the replay serve."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

from leyline_schemas import StepRecord, TelemetryEvent, decode, to_builtins
from services.karn.analytics import SeedLife, blueprint_stats, seed_scoreboards
from services.karn.jsonsafe import json_ready
from services.karn.pareto import REFERENCE_POINT, OutcomePoint, hypervolume, pareto_frontier
from services.karn.store import SYSTEM_RUN, RunStore


class UnknownRun(LookupError):
    """No such run in the store."""

    def __init__(self, run_id: str, known: list[str]) -> None:
        listing = ", ".join(known[-5:]) if known else "none"
        super().__init__(f"unknown run {run_id!r}: the store has no such run (latest known: {listing})")
        self.run_id = run_id


def _row(row: Any) -> dict[str, Any]:
    """A database row (or any mapping) as a JSON-ready dict."""
    ready: dict[str, Any] = json_ready(dict(row))
    return ready


def run_ids(store: RunStore) -> list[str]:
    """Known runs, oldest first."""
    rows = store.read(
        "SELECT run_id FROM runs WHERE run_id != ? ORDER BY coalesce(started_at, last_event_at), run_id", (SYSTEM_RUN,)
    )
    return [str(r["run_id"]) for r in rows]


def require_run(store: RunStore, run_id: str) -> dict[str, Any]:
    rows = store.read("SELECT * FROM runs WHERE run_id = ?", (run_id,))
    if not rows or run_id == SYSTEM_RUN:
        raise UnknownRun(run_id, run_ids(store))
    run = _row(rows[0])
    run["slot_ids"] = json.loads(run["slot_ids"] or "[]")
    return run


def list_runs(store: RunStore) -> list[dict[str, Any]]:
    return [run_status(store, run_id) for run_id in run_ids(store)]


def run_status(store: RunStore, run_id: str) -> dict[str, Any]:
    """The run row with its progress: episodes done, steps, envs seen, best accuracy, committed epochs."""
    run = require_run(store, run_id)
    (counts,) = store.read(
        "SELECT (SELECT count(*) FROM episodes WHERE run_id = :r) AS episodes_done, "
        "(SELECT count(*) FROM steps WHERE run_id = :r) AS steps, "
        "(SELECT count(*) FROM env_epochs WHERE run_id = :r) AS env_epochs, "
        "(SELECT count(DISTINCT env_id) FROM env_epochs WHERE run_id = :r) AS envs_seen, "
        "(SELECT max(val_accuracy) FROM env_epochs WHERE run_id = :r) AS best_accuracy, "
        "(SELECT count(*) FROM epochs WHERE run_id = :r) AS committed_epochs, "
        "(SELECT avg(final_accuracy) FROM episodes WHERE run_id = :r) AS mean_final_accuracy",
        {"r": run_id},
    )
    return {**run, **_row(counts)}


def envs(store: RunStore, run_id: str) -> list[dict[str, Any]]:
    """One row per env: its latest epoch, best accuracy and episodes done."""
    require_run(store, run_id)
    rows = store.read(
        "SELECT * FROM (SELECT e.*, row_number() OVER (PARTITION BY env_id ORDER BY episode DESC, epoch DESC) AS rn, "
        "max(val_accuracy) OVER (PARTITION BY env_id) AS best_accuracy FROM env_epochs e WHERE run_id = ?) "
        "WHERE rn = 1 ORDER BY env_id",
        (run_id,),
    )
    done = {
        int(r["env_id"]): int(r["n"])
        for r in store.read("SELECT env_id, count(*) AS n FROM episodes WHERE run_id = ? GROUP BY env_id", (run_id,))
    }
    result = []
    for row in rows:
        env = _row(row)
        env.pop("rn", None)
        env["slots"] = json.loads(env["slots"])
        env["contributions"] = json_ready(json.loads(env["contributions"]))
        env["episodes_done"] = done.get(int(env["env_id"]), 0)
        result.append(env)
    return result


def seeds(
    store: RunStore, run_id: str, env_id: int | None = None, stage: str | None = None, blueprint: str | None = None
) -> list[dict[str, Any]]:
    require_run(store, run_id)
    sql = "SELECT * FROM seeds WHERE run_id = ?"
    params: list[Any] = [run_id]
    for column, value in (("env_id", env_id), ("stage", stage.upper() if stage else None), ("blueprint", blueprint)):
        if value is not None:
            sql += f" AND {column} = ?"
            params.append(value)
    return [_row(r) for r in store.read(sql + " ORDER BY env_id, episode, germinated_epoch", tuple(params))]


def seed_lifecycle(store: RunStore, run_id: str, env_id: int, episode: int, seed_id: str) -> dict[str, Any] | None:
    """A seed with every lifecycle event that names it, oldest first; None if the run has no such seed."""
    require_run(store, run_id)
    rows = store.read(
        "SELECT * FROM seeds WHERE run_id = ? AND env_id = ? AND episode = ? AND seed_id = ?",
        (run_id, env_id, episode, seed_id),
    )
    if not rows:
        return None
    history = store.read(
        "SELECT seq, raw FROM events WHERE run_id = ? AND env_id = ? AND episode = ? AND seed_id = ? ORDER BY seq",
        (run_id, env_id, episode, seed_id),
    )
    return {**_row(rows[0]), "history": [_event_dict(r) for r in history]}


def policies(store: RunStore, run_id: str | None = None) -> list[dict[str, Any]]:
    """Policy lines with their versions; for a run, the lines its steps acted with and how often."""
    if run_id is None:
        ids = [str(r["policy_id"]) for r in store.read("SELECT DISTINCT policy_id FROM policy_versions")]
        usage: dict[str, dict[str, Any]] = {}
    else:
        require_run(store, run_id)
        rows = store.read(
            "SELECT policy_id, count(*) AS steps, min(policy_version) AS first_version, "
            "max(policy_version) AS last_version FROM steps WHERE run_id = ? GROUP BY policy_id",
            (run_id,),
        )
        usage = {str(r["policy_id"]): _row(r) for r in rows}
        ids = sorted(
            set(usage)
            | {
                str(r["policy_id"])
                for r in store.read("SELECT DISTINCT policy_id FROM policy_versions WHERE run_id = ?", (run_id,))
            }
        )
    result = []
    for policy_id in sorted(ids):
        versions = []
        for row in store.read("SELECT * FROM policy_versions WHERE policy_id = ? ORDER BY version", (policy_id,)):
            version = _row(row)
            version["head_entropies"] = json_ready(json.loads(version["head_entropies"]))
            version["skipped"] = bool(version["skipped"])
            versions.append(version)
        entry = {
            "policy_id": policy_id,
            "versions": versions,
            "latest_version": versions[-1]["version"] if versions else None,
        }
        if policy_id in usage:
            entry.update({k: usage[policy_id][k] for k in ("steps", "first_version", "last_version")})
        result.append(entry)
    return result


def episodes(store: RunStore, run_id: str) -> list[dict[str, Any]]:
    require_run(store, run_id)
    return [_row(r) for r in store.read("SELECT * FROM episodes WHERE run_id = ? ORDER BY episode", (run_id,))]


def epochs(store: RunStore, run_id: str) -> list[dict[str, Any]]:
    """Committed epochs (the §8.6 barrier): one per (round, epoch), with how many envs reported."""
    require_run(store, run_id)
    rows = store.read("SELECT * FROM epochs WHERE run_id = ? ORDER BY round, epoch", (run_id,))
    return [{**_row(r), "partial": r["n_reported"] < r["n_expected"]} for r in rows]


def seed_lives(store: RunStore, run_id: str) -> list[SeedLife]:
    return [
        SeedLife(
            env_id=r["env_id"],
            episode=r["episode"],
            seed_id=r["seed_id"],
            slot_id=r["slot_id"],
            blueprint=r["blueprint"],
            stage=r["stage"],
            params=r["params"] or 0,
            improvement=r["improvement"],
            counterfactual=r["counterfactual"],
            blending_delta=r["blending_delta"],
            epochs_total=r["epochs_total"] or 0,
            internal_level=r["internal_level"],
        )
        for r in store.read("SELECT * FROM seeds WHERE run_id = ?", (run_id,))
    ]


def outcome_points(store: RunStore, run_id: str) -> list[OutcomePoint]:
    rows = store.read(
        "SELECT env_id, episode, final_accuracy, param_ratio FROM episodes "
        "WHERE run_id = ? AND param_ratio IS NOT NULL AND final_accuracy IS NOT NULL",
        (run_id,),
    )
    return [OutcomePoint(r["final_accuracy"], r["param_ratio"], r["env_id"], r["episode"]) for r in rows]


def analytics(store: RunStore, run_id: str) -> dict[str, Any]:
    """Per-blueprint statistics, per-env scoreboards, the Pareto frontier and its hypervolume."""
    require_run(store, run_id)
    lives = seed_lives(store, run_id)
    points = outcome_points(store, run_id)
    frontier = pareto_frontier(points)
    outcomes = store.read(
        "SELECT count(*) AS episodes, avg(final_accuracy) AS mean_final_accuracy, "
        "avg(param_ratio) AS mean_param_ratio, avg(episode_return) AS mean_return, "
        "sum(seeds_fossilized) AS fossilized, sum(seeds_pruned) AS pruned "
        "FROM episodes WHERE run_id = ?",
        (run_id,),
    )[0]
    return _row(
        {
            "run_id": run_id,
            "blueprints": [dataclasses.asdict(s) for s in blueprint_stats(lives)],
            "scoreboards": [dataclasses.asdict(s) for s in seed_scoreboards(lives)],
            "pareto": {
                "reference_point": {"final_accuracy": REFERENCE_POINT[0], "param_ratio": REFERENCE_POINT[1]},
                "frontier": [dataclasses.asdict(p) for p in frontier],
                "hypervolume": hypervolume(frontier),
            },
            "outcomes": dict(outcomes),
        }
    )


def _event_dict(row: Any) -> dict[str, Any]:
    event = decode(row["raw"], TelemetryEvent)
    data: dict[str, Any] = to_builtins(event)
    return _row({"seq": row["seq"], **data})


def events(
    store: RunStore, run_id: str, after: int = 0, kinds: list[str] | None = None, limit: int = 500
) -> list[dict[str, Any]]:
    """Stored events of a run after sequence number `after`, oldest first."""
    require_run(store, run_id)
    sql = "SELECT seq, raw FROM events WHERE run_id = ? AND seq > ?"
    params: list[Any] = [run_id, after]
    if kinds:
        sql += f" AND kind IN ({', '.join('?' for _ in kinds)})"
        params.extend(kinds)
    rows = store.read(sql + " ORDER BY seq LIMIT ?", (*params, limit))
    return [_event_dict(r) for r in rows]


def replay(store: RunStore, run_id: str, batch: int = 2000) -> Iterator[TelemetryEvent | StepRecord]:
    """Every stored event of a run (in arrival order), then every step record (by env, episode, step)."""
    require_run(store, run_id)
    after = 0
    while True:
        rows = store.read(
            "SELECT seq, raw FROM events WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?", (run_id, after, batch)
        )
        if not rows:
            break
        for row in rows:
            yield decode(row["raw"], TelemetryEvent)
        after = int(rows[-1]["seq"])
    key = (-1, -1, -1)
    while True:
        rows = store.read(
            "SELECT env_id, episode, step, raw FROM steps WHERE run_id = ? AND (env_id, episode, step) > (?, ?, ?) "
            "ORDER BY env_id, episode, step LIMIT ?",
            (run_id, *key, batch),
        )
        if not rows:
            break
        for row in rows:
            yield decode(row["raw"], StepRecord)
        last = rows[-1]
        key = (int(last["env_id"]), int(last["episode"]), int(last["step"]))
