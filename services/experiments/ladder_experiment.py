"""`esper experiment ladder` (plans/kasmina2-phase0.md §12.3): does a seed that grows a rung at a time change how a
learned policy spends capacity?

Per seed replicate, two PPO lines train concurrently from the same run seed under the same reward mode: control may
germinate every CNN blueprint but conv_ladder, treatment every one (Choice 14: same network shape, conv_heavy in
both). Both are then played greedily, with the `wait` policy, on the same held-out hosts. A Karn store rebuilt from
the bus's log gives each training run's ladder report, and `ladder_verdict` turns it all into A1–A7.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.aio.client import Client

from leyline_schemas import (
    CNN_BLUEPRINTS,
    ArmSpec,
    BlueprintAction,
    RewardMode,
    StepRecord,
    Topology,
)
from leyline_schemas.observation import observation_size
from services.experiments.ladder_verdict import CONTROL, TREATMENT, WAIT, Replicate, ladder_verdict
from services.experiments.provenance import provenance
from services.experiments.step_audit import read_step_records
from services.experiments.training import TrainingPlan, train_and_evaluate_on
from services.karn.ladder_report import ladder_report
from services.karn.rebuild import rebuild
from services.karn.store import RunStore
from services.operator.run_client import bus_session

CONTROL_BLUEPRINTS = tuple(bp for bp in CNN_BLUEPRINTS if bp not in (BlueprintAction.NOOP, BlueprintAction.CONV_LADDER))


@dataclass(frozen=True)
class LadderPlan:
    """The experiment's size; the defaults are §12.3's CPU experiment on the headroom task."""

    task: str = "digits_tiny"
    rounds: int = 40
    envs: int = 4
    seeds: int = 3
    base_seed: int = 42
    eval_episodes: int = 8
    max_seeds: int = 2
    episode_length: int | None = None
    max_batches: int = 0
    reward_mode: RewardMode = RewardMode.SHAPED
    name: str = ""
    #: §12.5's pivot levers, applied to both arms (the control has no ladder, so they bind only the treatment).
    internal_op_cooldown_epochs: int = 0
    internal_ops_require_alpha_hold: bool = False
    #: The reward's internal-op cost for both arms (None: Simic's default, plans/kasmina2-phase0.md §8.1).
    internal_op_cost: float | None = None

    def __post_init__(self) -> None:
        from services.tolaria.tasks import get_task

        if get_task(self.task).topology is not Topology.CNN:
            raise ValueError(f"the ladder is a CNN seed; task {self.task} is not a CNN host")
        if min(self.rounds, self.envs, self.seeds, self.eval_episodes) < 1:
            raise ValueError("rounds, envs, seeds and eval episodes must be at least 1")
        if self.internal_op_cooldown_epochs < 0:
            raise ValueError(f"the internal-op cooldown must be >= 0 epochs, got {self.internal_op_cooldown_epochs}")
        cost = self.internal_op_cost
        if cost is not None and not (math.isfinite(cost) and cost >= 0):
            raise ValueError(f"the internal-op cost must be finite and >= 0, got {cost}")

    @property
    def resolved_episode_length(self) -> int:
        from services.tolaria.tasks import get_task

        return self.episode_length or get_task(self.task).episode_length

    @property
    def experiment_id(self) -> str:
        return self.name or f"ladder-{time.strftime('%Y%m%d-%H%M%S')}"

    def training_plan(self, experiment_id: str, replicate: int) -> TrainingPlan:
        arms = tuple(
            ArmSpec(
                arm_id=arm,
                policy_id=f"{experiment_id}-{arm}-s{replicate}",
                reward_mode=self.reward_mode,
                internal_op_cost=self.internal_op_cost,
            )
            for arm in (CONTROL, TREATMENT)
        )
        return TrainingPlan(
            arms=arms,
            task=self.task,
            rounds=self.rounds,
            n_envs_per_arm=self.envs,
            episode_length=self.episode_length,
            seed=self.base_seed + 1000 * replicate,
            eval_episodes=self.eval_episodes,
            baselines=(WAIT,),
            max_batches=self.max_batches,
            max_seeds=self.max_seeds,
            run_prefix=experiment_id,
            arm_blueprints={CONTROL: CONTROL_BLUEPRINTS},
            internal_op_cooldown_epochs=self.internal_op_cooldown_epochs,
            internal_ops_require_alpha_hold=self.internal_ops_require_alpha_hold,
        )


def observation_widths(records: Sequence[StepRecord]) -> dict[str, int]:
    """How many step records there are, and how many carry an observation not 25 + 32·S wide (A7).

    Read from the STEPS stream: Karn's store keeps steps without their observation.
    """
    wrong = sum(len(r.directive.observation) != observation_size(len(r.directive.blueprint_indices)) for r in records)
    return {"records": len(records), "wrong": wrong}


def replicate_reports(
    store: RunStore, plan: LadderPlan, result: dict[str, Any], widths: dict[str, dict[str, int]]
) -> Replicate:
    """The ladder reports a verdict reads, from the store rebuilt after the replicate's runs."""
    episodes = plan.rounds * plan.envs
    half = (plan.rounds // 2) * plan.envs  # the first episode of the last half of the rounds
    quarter = max(1, plan.rounds // 4) * plan.envs
    reports: dict[str, dict[str, Any]] = {}
    for arm in (CONTROL, TREATMENT):
        run_id = result["training"][arm]["run_id"]
        reports[arm] = {
            "last_half": [ladder_report(store, run_id, e, e) for e in range(half, episodes)],
            "whole": ladder_report(store, run_id),
            "first_quarter": ladder_report(store, run_id, 0, quarter - 1),
            "last_quarter": ladder_report(store, run_id, episodes - quarter, episodes - 1),
        }
    return Replicate(
        training=result["training"],
        evaluation=result["evaluation"],
        last_half={arm: r["last_half"] for arm, r in reports.items()},
        whole={arm: r["whole"] for arm, r in reports.items()},
        first_quarter={arm: r["first_quarter"] for arm, r in reports.items()},
        last_quarter={arm: r["last_quarter"] for arm, r in reports.items()},
        widths=widths,
    )


def _bus_url(nc: Client) -> str:
    url = nc.connected_url
    if url is None:
        raise RuntimeError("the experiment's bus connection has no server")
    return f"{url.scheme}://{url.netloc}"


async def _run(nc: Client, plan: LadderPlan, experiment_id: str, out: Path, timeout: float) -> list[Replicate]:
    replicates = []
    for replicate in range(plan.seeds):
        training_plan = plan.training_plan(experiment_id, replicate)
        result = await train_and_evaluate_on(nc, training_plan, timeout=timeout)
        expected = plan.rounds * plan.envs * plan.resolved_episode_length
        widths = {}
        for arm in (CONTROL, TREATMENT):
            records = await read_step_records(nc, result["training"][arm]["run_id"], expected=expected)
            widths[arm] = observation_widths(records)
        store_path = out / "karn.sqlite"
        await rebuild(_bus_url(nc), store_path)
        with RunStore.open(store_path) as store:
            reports = replicate_reports(store, plan, result, widths)
        replicates.append(reports)
        summary = {**result, "ladder": {arm: reports.whole[arm] for arm in (CONTROL, TREATMENT)}}
        (out / f"replicate-{replicate}.json").write_text(json.dumps(summary, indent=2) + "\n")
    return replicates


def run_ladder_experiment(
    plan: LadderPlan,
    *,
    out: Path,
    nats_url: str | None = None,
    timeout: float = 7200.0,
    learner_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Every replicate on one bus (embedded unless `nats_url`), then the verdict; writes ladder_verdict.json."""
    import asyncio

    experiment_id = plan.experiment_id
    out.mkdir(parents=True, exist_ok=True)
    envs = max(2 * plan.envs, 3 * plan.eval_episodes)
    env = {"ESPER_MAX_ENVS": str(max(4, math.ceil(envs))), **(learner_env or {})}
    started = time.monotonic()
    origin = provenance()

    async def go() -> list[Replicate]:
        async with bus_session(nats_url, out, extra_env=env) as nc:
            return await _run(nc, plan, experiment_id, out, timeout)

    replicates = asyncio.run(go())
    verdict = {
        "experiment": experiment_id,
        "plan": {k: (v.value if isinstance(v, RewardMode) else v) for k, v in plan.__dict__.items()},
        "control_blueprints": [bp.name.lower() for bp in CONTROL_BLUEPRINTS],
        **ladder_verdict(replicates),
        "wall_seconds": round(time.monotonic() - started, 1),
        "provenance": origin,
    }
    (out / "ladder_verdict.json").write_text(json.dumps(verdict, indent=2) + "\n")
    return verdict
