"""Kasmina's lifecycle step timed without the bus: tick, observation, masks and execute on one StepRequest.

`esper bench kasmina` (services/operator/bench.py) reports these figures next to Tolaria's per-blueprint cost.
"""

from __future__ import annotations

import leyline_schemas as L
from services.kasmina.lifecycle import execute, tick
from services.kasmina.masks import compute_masks
from services.kasmina.transitions import advance_state, germinate_state
from services.observation.features import build_observation
from services.runtime.timing import percentiles, time_calls


def lifecycle_request(n_slots: int) -> L.StepRequest:
    """A StepRequest with seeds in several stages, so the tick, observation and masks do real work."""
    specs = [L.SlotSpec(slot_id=f"r{i // 5}c{i % 5}", channels=32, order=i) for i in range(n_slots)]
    slots = []
    for i, spec in enumerate(specs):
        if i % 3 == 2:
            slots.append(L.SlotState(slot_id=spec.slot_id))
            continue
        change = germinate_state(
            spec.slot_id,
            f"s{i}",
            L.BlueprintAction.CONV_SMALL,
            L.BlendId.SIGMOID,
            L.AlphaAlgorithm.ADD,
            5,
            1.0,
            1,
            6418,
            50.0,
        )
        state = change.state if i % 3 == 0 else advance_state(change.state, permissive=True).state
        slots.append(state)
    report = L.EpochReport(
        epoch=12,
        max_epochs=25,
        train_loss=1.1,
        train_accuracy=61.0,
        val_loss=1.2,
        val_accuracy=58.0,
        val_loss_history=[1.5, 1.4, 1.3, 1.25, 1.2],
        val_accuracy_history=[50.0, 53.0, 55.0, 57.0, 58.0],
        slots=[
            L.SlotReport(slot_id=s.slot_id, gradient_health=0.9, gradient_norm=0.5, seed_gradient_norm_ratio=0.2)
            for s in specs
        ],
    )
    return L.StepRequest(
        run_id="bench",
        env_id=0,
        episode=0,
        epoch=12,
        policy_id="wait",
        slot_config=L.SlotConfig(topology=L.Topology.CNN, slots=specs, host_param_count=6418),
        lifecycle=L.LifecycleConfig(max_epochs=25),
        report=report,
        slots=slots,
    )


def bench_lifecycle(n_slots: int, iterations: int) -> dict[str, float]:
    """Milliseconds of one lifecycle step over `n_slots` slots: `p50_ms`, `p99_ms`, `mean_ms` and `n`."""
    req = lifecycle_request(n_slots)

    def one_step() -> None:
        ticked = tick(req)
        build_observation(req, ticked.slots)
        compute_masks(ticked.slots, req.slot_config, req.lifecycle, 2, epoch=req.epoch)
        execute(L.FactoredAction(op=L.LifecycleOp.ADVANCE, slot=1), req, ticked.slots)

    ms = [s * 1000 for s in time_calls(one_step, iterations, warmup=20)]
    return {f"{k}_ms" if k != "n" else k: v for k, v in percentiles(ms).items()}
