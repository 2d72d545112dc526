"""A task's headroom: the host alone against the host with every default slot filled, trained the same way.

Static-initial is the host with its slots left empty; "filled" replays a manifest with the blueprint in every default
slot (FOSSILIZED at α = 1 from epoch 1, fresh weights, the static-final construction of plans/proof-baselines.md
§3.3), so both train with the task's own optimizers, batch size and data order on the same env seeds. Growth can only
be judged where the gap is wide: `esper tasks --measure TASK` reruns this, and the registry keeps the figures it gave
(`MEASURED`), with the command that produced them.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any

from leyline_schemas import BlueprintAction, CommittedSeed, TopologyManifest
from services.tolaria.env import EpisodeEnv
from services.tolaria.tasks import get_task
from services.tolaria.topology import manifest_hash
from services.tolaria.worker import load_task_data


@dataclass(frozen=True)
class Headroom:
    task: str
    epochs: int
    seeds: tuple[int, ...]
    blueprint: str
    host_params: int
    filled_params: int
    static_initial: tuple[float, ...]
    filled: tuple[float, ...]

    @property
    def gap(self) -> float:
        return statistics.fmean(self.filled) - statistics.fmean(self.static_initial)

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "static_initial_mean": round(statistics.fmean(self.static_initial), 2),
            "filled_mean": round(statistics.fmean(self.filled), 2),
            "gap_pp": round(self.gap, 2),
        }


def filled_manifest(task_name: str, blueprint: BlueprintAction = BlueprintAction.CONV_LIGHT) -> TopologyManifest:
    task = get_task(task_name)
    host_params = sum(p.numel() for p in task.build_host().parameters())
    seeds = [CommittedSeed(slot_id=slot, blueprint=blueprint) for slot in task.default_slots]
    return TopologyManifest(
        task=task.name, host_params=host_params, seeds=seeds, manifest_hash=manifest_hash(task.name, host_params, seeds)
    )


def _final_accuracy(
    task_name: str, seed: int, epochs: int, max_batches: int, manifest: TopologyManifest | None
) -> tuple[float, int]:
    task = get_task(task_name)
    data = load_task_data(task.name, 0, False, "")
    env = EpisodeEnv(
        task,
        data,
        list(task.default_slots),
        seed=seed,
        episode_length=epochs,
        batch_size=task.batch_size,
        max_batches=max_batches,
        replay=manifest,
    )
    accuracy = 0.0
    for epoch in range(1, epochs + 1):
        accuracy = env.run_epoch(epoch).report.val_accuracy
    return accuracy, env.model.total_params


def measure_headroom(
    task_name: str,
    seeds: tuple[int, ...] = (1, 2, 3),
    epochs: int | None = None,
    max_batches: int = 0,
    blueprint: BlueprintAction = BlueprintAction.CONV_LIGHT,
) -> Headroom:
    task = get_task(task_name)
    length = epochs or task.episode_length
    manifest = filled_manifest(task.name, blueprint)
    alone = [_final_accuracy(task.name, s, length, max_batches, None) for s in seeds]
    filled = [_final_accuracy(task.name, s, length, max_batches, manifest) for s in seeds]
    return Headroom(
        task=task.name,
        epochs=length,
        seeds=seeds,
        blueprint=blueprint.name.lower(),
        host_params=alone[0][1],
        filled_params=filled[0][1],
        static_initial=tuple(round(a, 2) for a, _ in alone),
        filled=tuple(round(a, 2) for a, _ in filled),
    )
