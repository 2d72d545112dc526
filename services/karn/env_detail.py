"""One env's counterfactual picture from the store: the latest epoch's per-seed contributions as a waterfall, the
pair interactions and the latest terminal Shapley values (the web view's env detail, `GET /runs/{id}/envs/{env}`).

Missing measurements stay missing: a slot whose contribution was not measured is not a bar, an epoch without an
all-off accuracy has no waterfall, and an env with no Shapley event has `shapley: None`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

from leyline_schemas import (
    SeedGerminated,
    SeedStage,
    SeedStageChanged,
    ShapleyComputed,
    StepRecord,
    TelemetryEvent,
    blueprint_name,
    decode,
)
from services.karn.jsonsafe import json_ready
from services.karn.queries import require_run
from services.karn.store import RunStore


class UnknownEnv(LookupError):
    """The run has no step record of this env (or of this env's episode)."""


def waterfall(
    all_off: float | None, accuracy: float, contributions: Sequence[tuple[str, float]]
) -> list[dict[str, Any]]:
    """Bars from all seeds off to the main configuration: one per measured seed (its leave-one-out contribution),
    then what the contributions leave unexplained (interactions, and nonlinearity), then the total.

    Each bar runs from `start` to `end` (accuracy %); empty when all-off was not measured or is not finite.
    """
    if all_off is None or not math.isfinite(all_off) or not math.isfinite(accuracy):
        return []
    bars = [{"label": "all seeds off", "kind": "base", "start": 0.0, "end": all_off, "delta": all_off}]
    level = all_off
    for slot_id, contribution in contributions:
        bars.append(
            {"label": slot_id, "kind": "seed", "start": level, "end": level + contribution, "delta": contribution}
        )
        level += contribution
    remainder = accuracy - level
    bars.append(
        {"label": "interactions + rest", "kind": "remainder", "start": level, "end": accuracy, "delta": remainder}
    )
    bars.append({"label": "main config", "kind": "total", "start": 0.0, "end": accuracy, "delta": accuracy})
    return bars


def _latest_step(store: RunStore, run_id: str, env_id: int, episode: int | None) -> StepRecord:
    sql = "SELECT raw FROM steps WHERE run_id = ? AND env_id = ?"
    params: list[Any] = [run_id, env_id]
    if episode is not None:
        sql += " AND episode = ?"
        params.append(episode)
    rows = store.read(sql + " ORDER BY episode DESC, step DESC LIMIT 1", tuple(params))
    if not rows:
        where = f"env {env_id}" + (f" episode {episode}" if episode is not None else "")
        raise UnknownEnv(f"run {run_id!r} has no step record of {where}")
    return decode(rows[0]["raw"], StepRecord)


def _shapley(store: RunStore, run_id: str, env_id: int, episode: int) -> dict[str, Any] | None:
    """The newest terminal Shapley event of this env at or before `episode`."""
    rows = store.read(
        "SELECT raw FROM events WHERE run_id = ? AND env_id = ? AND kind = 'shapley_computed' AND episode <= ? "
        "ORDER BY episode DESC, seq DESC LIMIT 1",
        (run_id, env_id, episode),
    )
    if not rows:
        return None
    event = decode(rows[0]["raw"], TelemetryEvent)
    payload = event.payload
    assert isinstance(payload, ShapleyComputed)
    values = [
        {"slot_id": slot, "value": payload.shapley[slot], "std": payload.shapley_std.get(slot)}
        for slot in payload.slot_ids
        if slot in payload.shapley
    ]
    return {"episode": event.episode, "epoch": event.epoch, "strategy": payload.strategy, "values": values}


_LIFECYCLE_KINDS = ("seed_germinated", "seed_stage_changed")
_GONE_STAGES = frozenset({"PRUNED", "EMBARGOED", "RESETTING", "DORMANT"})


def lifecycles(store: RunStore, run_id: str) -> dict[str, Any]:
    """Each env's newest episode as stage segments per seed: GERMINATED from its germination epoch, then one segment
    per stage change, each running until the next change (the last until the seed ended, or the env's newest epoch).
    """
    require_run(store, run_id)
    rows = store.read(
        "SELECT raw FROM events WHERE run_id = ? AND kind IN (?, ?) ORDER BY seq", (run_id, *_LIFECYCLE_KINDS)
    )
    newest = {
        int(r["env_id"]): (int(r["episode"]), int(r["epoch"]))
        for r in store.read(
            "SELECT env_id, episode, max(epoch) AS epoch FROM env_epochs WHERE run_id = ? "
            "AND (env_id, episode) IN (SELECT env_id, max(episode) FROM env_epochs WHERE run_id = ? GROUP BY env_id) "
            "GROUP BY env_id, episode",
            (run_id, run_id),
        )
    }
    seeds: dict[tuple[int, str], dict[str, Any]] = {}
    for row in rows:
        event = decode(row["raw"], TelemetryEvent)
        if event.env_id is None or event.env_id not in newest or event.episode != newest[event.env_id][0]:
            continue
        p = event.payload
        key = (event.env_id, p.seed_id)  # type: ignore[union-attr]
        epoch = event.epoch or 0
        if isinstance(p, SeedGerminated):
            seeds[key] = {
                "env_id": event.env_id,
                "seed_id": p.seed_id,
                "slot_id": p.slot_id,
                "blueprint": blueprint_name(p.blueprint),
                "segments": [{"stage": "GERMINATED", "from": epoch, "to": epoch}],
            }
        elif isinstance(p, SeedStageChanged) and key in seeds:
            seeds[key]["segments"].append({"stage": p.to_stage, "from": epoch, "to": epoch})
    for (env_id, _), seed in seeds.items():
        current = newest[env_id][1]
        segments = seed["segments"]
        for here, following in itertools.pairwise(segments):
            here["to"] = max(here["from"], following["from"] - 1)
        # A fossil stays in the host to the end; a pruned seed's slot states are one-epoch marks.
        gone = segments[-1]["stage"] in _GONE_STAGES
        segments[-1]["to"] = segments[-1]["from"] if gone else max(segments[-1]["from"], current)
    envs: dict[str, Any] = {
        str(env_id): {"env_id": env_id, "episode": episode, "epoch": epoch, "seeds": []}
        for env_id, (episode, epoch) in sorted(newest.items())
    }
    for (env_id, _), seed in seeds.items():
        envs[str(env_id)]["seeds"].append(seed)
    return envs


def env_detail(store: RunStore, run_id: str, env_id: int, episode: int | None = None) -> dict[str, Any]:
    """The env's latest step (of `episode`, or of its newest episode): seeds, waterfall, interactions, Shapley."""
    require_run(store, run_id)
    record = _latest_step(store, run_id, env_id, episode)
    report = record.report
    measured = {s.slot_id: s for s in report.slots}
    states = record.directive.slots or record.directive.observed_slots
    seeds: list[dict[str, Any]] = []
    contributions: list[tuple[str, float]] = []
    for state in states:
        occupied = state.stage not in (SeedStage.DORMANT, SeedStage.UNKNOWN)
        slot = measured.get(state.slot_id)
        seeds.append(
            {
                "slot_id": state.slot_id,
                "stage": state.stage.name if occupied else None,
                "blueprint": blueprint_name(state.blueprint) if occupied else None,
                "seed_id": state.seed_id or None,
                "alpha": state.controller.alpha if occupied else None,
                "contribution": slot.contribution if slot else None,
                "solo_on_accuracy": slot.solo_on_accuracy if slot else None,
                "params": slot.seed_param_count if slot else 0,
            }
        )
        if slot is not None and slot.contribution is not None:
            contributions.append((state.slot_id, slot.contribution))
    detail: dict[str, Any] = json_ready(
        {
            "run_id": run_id,
            "env_id": env_id,
            "episode": record.episode,
            "epoch": report.epoch,
            "max_epochs": report.max_epochs,
            "accuracy": report.val_accuracy,
            "all_off_accuracy": report.all_off_accuracy,
            "host_params": report.host_params,
            "total_params": report.total_params,
            "seeds": seeds,
            "waterfall": waterfall(report.all_off_accuracy, report.val_accuracy, contributions),
            "interactions": [
                {"slot_a": i.slot_a, "slot_b": i.slot_b, "interaction": i.interaction} for i in report.interactions
            ],
            "shapley": _shapley(store, run_id, env_id, record.episode),
            "policy_id": record.policy_id,
            "policy_version": record.policy_version,
        }
    )
    return detail
