"""`esper experiment proof`: does growing earn its parameters? A trained policy line against the control cohorts.

Per replicate (training seed base + 1000·r) a fresh PPO line, the treatment, is trained; then every cohort plays the
same held-out env seeds (eval seed + 1009·i), so each comparison is paired env by env (plans/proof-baselines.md):

- treatment: the trained line's greedy view;
- off-switch: the host with no slots and no decisions (`RunSpec.morphogenesis = False`);
- static-initial: the full machinery with the `wait` policy (the host left alone);
- static-final: the treatment's committed architecture of that pair, built from scratch before epoch 1 and trained
  for the same epochs with the same optimizers (`RunSpec.env_topologies`); a pair whose treatment committed no seed
  reuses its static-initial episode, flagged `no_growth`;
- fixed-schedule: `fixed-germinate-r0c0-v1`, a declared lifecycle recipe through the real masks;
- random and heuristic.

Controls are evaluation-only runs; none learns. The lockstep reward A/B is `esper experiment ab` (and the
reward-efficiency exam), not a cohort here.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import msgspec
from nats.aio.client import Client

from leyline_schemas import RewardMode, RunSpec, StepRecord, TopologyManifest
from leyline_schemas.policy_ids import FIXED_SCHEDULE_POLICY_ID, GREEDY_SUFFIX
from services.experiments.proof_analysis import (
    FIXED_SCHEDULE,
    HEURISTIC,
    OFF_SWITCH,
    RANDOM,
    STATIC_FINAL,
    STATIC_INITIAL,
    TREATMENT,
    EpochPoint,
    PairRow,
    judge,
)
from services.experiments.step_audit import evaluation_version_check, read_step_records
from services.experiments.training import TrainingPlan, evaluation_spec, replicate_plan, train_on
from services.operator.run_client import RunFollower, bus_session, follow_run


@dataclass(frozen=True)
class ProofSettings:
    task: str = "mnist1d"
    replicates: int = 5
    episodes: int = 32
    envs: int = 4
    eval_episodes: int = 8
    episode_length: int | None = None
    max_batches: int = 0
    max_seeds: int = 2
    reward_mode: RewardMode = RewardMode.SIMPLIFIED
    base_seed: int = 42
    synthetic: bool = False


#: The fixed-behaviour cohorts played on every replicate's held-out seeds: cohort → (policy id, morphogenesis).
FIXED_COHORTS: dict[str, tuple[str, bool]] = {
    OFF_SWITCH: ("wait", False),
    STATIC_INITIAL: ("wait", True),
    FIXED_SCHEDULE: (FIXED_SCHEDULE_POLICY_ID, True),
    RANDOM: ("random", True),
    HEURISTIC: ("heuristic", True),
}
COHORT_ORDER = (TREATMENT, OFF_SWITCH, STATIC_INITIAL, STATIC_FINAL, FIXED_SCHEDULE, RANDOM, HEURISTIC)


def plan_for(settings: ProofSettings, experiment_id: str, replicate: int) -> TrainingPlan:
    return replicate_plan(
        experiment_id,
        replicate,
        [settings.reward_mode],
        task=settings.task,
        episodes=settings.episodes,
        envs=settings.envs,
        episode_length=settings.episode_length,
        base_seed=settings.base_seed,
        eval_episodes=settings.eval_episodes,
        baselines=(),
        max_batches=settings.max_batches,
        max_seeds=settings.max_seeds,
        synthetic=settings.synthetic,
    )


def pair_rows(cohort: str, replicate: int, follower: RunFollower, spec: RunSpec) -> list[PairRow]:
    """One row per finished episode of an evaluation run, with its per-epoch curve from the telemetry."""
    rows = []
    for (env, episode), outcome in sorted(follower.outcomes.items()):
        events = follower.epoch_events.get((env, episode), {})
        curve = tuple(
            EpochPoint(
                epoch=epoch,
                accuracy=e.val_accuracy,
                loss=e.val_loss,
                train_flops=e.compute.train_flops if e.compute else 0,
                params_in_forward=e.compute.params_in_forward if e.compute else 0,
                order_hash=e.compute.data_order_hash if e.compute else "",
                op=e.op,
                outcome=e.outcome,
            )
            for epoch, e in sorted(events.items())
        )
        replayed = spec.env_topologies.get(env)
        rows.append(
            PairRow(
                cohort=cohort,
                replicate=replicate,
                env=env,
                final_accuracy=outcome.final_accuracy,
                seed_params_added=outcome.seed_params_added,
                committed_params=outcome.committed_params,
                parameter_epochs=outcome.parameter_epochs,
                train_flops=outcome.train_flops,
                rollbacks=outcome.rollbacks,
                germinated=outcome.seeds_germinated,
                fossilized=outcome.seeds_fossilized,
                pruned=outcome.seeds_pruned,
                topology_hash=outcome.topology.manifest_hash if outcome.topology else "",
                curve=curve if len(curve) == outcome.length else (),
                dead_params=outcome.dead_params,
                uncommitted_params=outcome.uncommitted_params,
                replayed_hash=replayed.manifest_hash if replayed else "",
                flags=("partial_growth",) if outcome.uncommitted_params else (),
            )
        )
    return rows


async def _evaluate(nc: Client, spec: RunSpec, cohort: str, replicate: int, timeout: float) -> list[PairRow]:
    _, follower, _ = await follow_run(nc, spec, timeout=timeout, show_progress=False)
    return pair_rows(cohort, replicate, follower, spec)


def _spec(
    plan: TrainingPlan, policy_id: str, mode: RewardMode, cohort: str, *, version: int = 0, **changes: Any
) -> RunSpec:
    """An evaluation run of one cohort on the plan's held-out seeds; `version` is the line version it must play."""
    run_id = f"proof-{cohort}-{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:6]}"
    spec = evaluation_spec(plan, policy_id, mode, run_id, version=version)
    return msgspec.structs.replace(spec, cohort=cohort, **changes)


def _version_mismatches(records: Sequence[StepRecord], env: int, version: int) -> int:
    """Steps of `env`'s evaluation decided by another version than the one evaluated, or by none."""
    check = evaluation_version_check([r for r in records if r.env_id == env], version)
    return check["version_mismatches"] + check["undecided_steps"]


def _manifests(treated: Sequence[PairRow], outcomes: dict[int, TopologyManifest]) -> dict[int, TopologyManifest]:
    return {row.env: outcomes[row.env] for row in treated if row.env in outcomes and outcomes[row.env].seeds}


async def run_replicate(
    nc: Client, settings: ProofSettings, experiment_id: str, replicate: int, *, timeout: float
) -> dict[str, Any]:
    """Train the treatment line of one replicate, then play every cohort on its held-out seeds."""
    plan = plan_for(settings, experiment_id, replicate)
    trained = (await train_on(nc, plan, timeout=timeout))[settings.reward_mode.value]
    mode = settings.reward_mode
    version = int(trained["final_version"])
    treatment_spec = _spec(plan, trained["policy_id"] + GREEDY_SUFFIX, mode, TREATMENT, version=version)
    fixed = {
        cohort: _spec(plan, policy, mode, cohort, morphogenesis=on) for cohort, (policy, on) in FIXED_COHORTS.items()
    }
    specs = {TREATMENT: treatment_spec, **fixed}

    async def treatment() -> tuple[list[PairRow], dict[int, TopologyManifest]]:
        _, follower, _ = await follow_run(nc, treatment_spec, timeout=timeout, show_progress=False)
        expected = treatment_spec.episodes * treatment_spec.episode_length
        records = await read_step_records(nc, treatment_spec.run_id, expected=expected)
        rows = [
            replace(row, version_mismatches=_version_mismatches(records, row.env, version))
            for row in pair_rows(TREATMENT, replicate, follower, treatment_spec)
        ]
        return rows, {env: o.topology for (env, _), o in follower.outcomes.items() if o.topology is not None}

    controls = asyncio.gather(*(_evaluate(nc, spec, cohort, replicate, timeout) for cohort, spec in fixed.items()))
    (treatment_rows, topologies), fixed_rows = await asyncio.gather(treatment(), controls)
    manifests = _manifests(treatment_rows, topologies)
    final_spec = _spec(plan, "wait", mode, STATIC_FINAL, env_topologies=manifests)
    specs[STATIC_FINAL] = final_spec
    final_rows = await _evaluate(nc, final_spec, STATIC_FINAL, replicate, timeout) if manifests else []
    controls_rows = [row for batch in fixed_rows for row in batch]
    # A pair whose treatment committed no seed: static-final is static-initial's episode (§3.3 "No growth").
    no_growth = {
        row.env: replace(row, cohort=STATIC_FINAL, flags=("no_growth",))
        for row in controls_rows
        if row.cohort == STATIC_INITIAL and row.env not in manifests
    }
    static_final = [row for row in final_rows if row.env not in no_growth] + list(no_growth.values())
    rows = [*treatment_rows, *controls_rows, *static_final]
    return {
        "replicate": replicate,
        "training": {k: v for k, v in trained.items() if k != "episodes"},
        "run_ids": {cohort: spec.run_id for cohort, spec in specs.items()},
        "rows": rows,
    }


async def run_proof_on(nc: Client, settings: ProofSettings, *, timeout: float = 7200.0) -> dict[str, Any]:
    experiment_id = f"proof-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    started = time.monotonic()
    replicates = []
    for r in range(settings.replicates):
        replicates.append(await run_replicate(nc, settings, experiment_id, r, timeout=timeout))
    rows = [row for rep in replicates for row in rep["rows"]]
    pairs = sorted({(rep["replicate"], env) for rep in replicates for env in range(settings.eval_episodes)})
    judgement = judge(rows, COHORT_ORDER, settings.replicates, pairs)
    return {
        "experiment_id": experiment_id,
        "settings": {**settings.__dict__, "reward_mode": settings.reward_mode.value},
        "replicates": replicates,
        "rows": rows,
        "judgement": judgement,
        "wall_seconds": round(time.monotonic() - started, 1),
    }


def run_proof(
    settings: ProofSettings,
    out_dir: Path,
    *,
    nats_url: str | None = None,
    timeout: float = 7200.0,
    learner_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    envs = max(settings.envs, settings.eval_episodes * (len(FIXED_COHORTS) + 2))
    extra = {"ESPER_MAX_ENVS": str(max(4, math.ceil(envs))), **(learner_env or {})}

    async def go() -> dict[str, Any]:
        async with bus_session(nats_url, out_dir, extra_env=extra) as nc:
            return await run_proof_on(nc, settings, timeout=timeout)

    return asyncio.run(go())
