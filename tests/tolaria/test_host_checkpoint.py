"""Host checkpoints: an episode restored from the checkpoint of epoch k into a fresh env trains on bit for bit, so
its weights, optimizers and step records match an episode run straight through; a checkpoint that does not fit
is refused with CheckpointError before anything trains."""

from __future__ import annotations

import msgspec
import pytest
import torch

from leyline_schemas import (
    DecisionOutcome,
    LifecycleConfig,
    LifecycleOp,
    SeedStage,
    StepRecord,
    StepRequest,
)
from services.kasmina.step import complete_step, prepare_step
from services.tamiyo.simple_policies import random_decision
from services.tolaria.env import EpisodeEnv
from services.tolaria.governor import state_digest
from services.tolaria.host_checkpoint import CheckpointError, EpisodeKey, EpisodeProgress, capture, read_key, restore
from services.tolaria.tasks import TaskData, TaskSpec, get_task

LENGTH = 16
KEY = EpisodeKey(run_id="ckpt", env_id=0, episode=0, task="digits", seed=5)
LIFECYCLE = LifecycleConfig(max_seeds=2, permissive_gates=True, max_epochs=LENGTH)


@pytest.fixture(scope="module")
def digits() -> tuple[TaskSpec, TaskData]:
    task = get_task("digits")
    return task, task.load_data(7, False, None)


def fresh_env(digits: tuple[TaskSpec, TaskData]) -> EpisodeEnv:
    task, data = digits
    return EpisodeEnv(
        task,
        data,
        list(task.default_slots),
        seed=KEY.seed,
        episode_length=LENGTH,
        batch_size=64,
        max_batches=4,
        lifecycle=LIFECYCLE,
    )


def run_epochs(env: EpisodeEnv, progress: EpisodeProgress, until: int) -> EpisodeProgress:
    """The worker's epoch loop without the bus: Kasmina's step and the random policy (reproducible per request, and
    it germinates, advances, re-targets alpha and prunes), called in process."""
    slot_config = env.slot_config()
    for epoch in range(progress.epoch + 1, until + 1):
        report = env.run_epoch(epoch).report
        step = StepRequest(
            run_id=KEY.run_id,
            env_id=KEY.env_id,
            episode=KEY.episode,
            epoch=epoch,
            policy_id="random",
            slot_config=slot_config,
            lifecycle=LIFECYCLE,
            report=report,
            slots=env.slot_states,
            policy_state=progress.policy_state,
            last_op=progress.last_op,
            last_action_succeeded=progress.last_ok,
            total_seeds=env.total_seeds,
        )
        prepared = prepare_step(step)
        directive, _ = complete_step(prepared, random_decision(prepared.decision_request()), DecisionOutcome.APPLIED)
        refused = env.apply(directive)
        done = epoch == LENGTH
        record = StepRecord(
            run_id=KEY.run_id,
            arm="a",
            env_id=KEY.env_id,
            episode=KEY.episode,
            step=epoch,
            policy_id="random",
            policy_version=0,
            report=report,
            directive=directive,
            applied=not refused,
            done=done,
            summary=env.summary(KEY.run_id, KEY.env_id, KEY.episode) if done else None,
        )
        progress = EpisodeProgress(
            epoch=epoch,
            policy_state=directive.policy_state,
            last_op=directive.effective_op,
            last_ok=not refused,
            records=[*progress.records, record],
        )
    return progress


def timeless(record: StepRecord) -> StepRecord:
    """A record without its wall-clock figures, which no two runs share."""
    report = record.report
    compute = msgspec.structs.replace(report.compute, train_seconds=0.0, validate_seconds=0.0)
    return msgspec.structs.replace(record, report=msgspec.structs.replace(report, epoch_seconds=0.0, compute=compute))


def momentum(env: EpisodeEnv) -> str:
    """A digest of the host optimizer's momentum buffers."""
    state = env.host_optimizer.state_dict()["state"]
    return state_digest({str(index): entry["momentum_buffer"] for index, entry in state.items()})


def watchers(env: EpisodeEnv) -> dict[str, object]:
    """What watches the episode besides the model: governor (history and Last-Known-Good), signals, gradients,
    compute ledger and counters; none of it shows in a record until it acts (a rollback, a germination gate)."""
    governor = env.governor.state()
    return {
        "governor": (governor["history"], governor["consecutive"], state_digest(governor["snapshot"])),
        "signals": env.signals,
        "gradients": env.gradients.state(),
        "ledger": env.ledger.state(),
        "counters": env.counters,
    }


@pytest.fixture(scope="module")
def straight(digits: tuple[TaskSpec, TaskData]) -> tuple[EpisodeProgress, EpisodeEnv]:
    env = fresh_env(digits)
    return run_epochs(env, EpisodeProgress(), LENGTH), env


# The random policy's trajectory here: a seed germinates at epoch 1, trains from epoch 4 and is pruned at 6; the
# slot is embargoed to 11, and another seed germinates at 14. Epoch 5 checkpoints a training seed with its
# optimizer's momentum; epoch 9 a host with no seed, whose next seed draws its weights after the restore.
@pytest.mark.parametrize(("k", "live_seed"), [(5, True), (9, False)])
def test_an_episode_resumed_from_epoch_k_ends_as_one_run_straight_through(
    digits: tuple[TaskSpec, TaskData], straight: tuple[EpisodeProgress, EpisodeEnv], k: int, live_seed: bool
) -> None:
    whole, whole_env = straight
    interrupted = fresh_env(digits)
    blob = capture(interrupted, run_epochs(interrupted, EpisodeProgress(), k), KEY)
    assert bool(interrupted.seed_optimizers) is live_seed
    assert any(s.stage is SeedStage.TRAINING for s in interrupted.slot_states) is live_seed
    assert any(r.directive.effective_op is LifecycleOp.GERMINATE for r in whole.records[k:])
    del interrupted  # the worker died; only the blob survives
    assert read_key(blob) == (KEY, k)

    resumed = fresh_env(digits)
    progress = restore(resumed, blob, KEY)
    assert progress.epoch == k and [r.step for r in progress.records] == list(range(1, k + 1))
    finished = run_epochs(resumed, progress, LENGTH)

    assert [timeless(r) for r in finished.records] == [timeless(r) for r in whole.records]
    final = finished.records[-1].summary
    assert final is not None and final.state_sha256 == whole.records[-1].summary.state_sha256  # type: ignore[union-attr]
    assert state_digest(resumed.model.state_dict()) == state_digest(whole_env.model.state_dict())
    assert momentum(resumed) == momentum(whole_env)
    assert watchers(resumed) == watchers(whole_env)


def test_the_final_digest_tells_different_weights_apart(straight: tuple[EpisodeProgress, EpisodeEnv]) -> None:
    _, env = straight
    state = env.model.state_dict()
    changed = dict(state)
    first = next(k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point())
    changed[first] = state[first].clone()
    changed[first].view(-1)[0] += 1e-6
    assert state_digest(changed) != state_digest(state)


def test_a_checkpoint_restores_only_into_its_own_episode(digits: tuple[TaskSpec, TaskData]) -> None:
    env = fresh_env(digits)
    blob = capture(env, run_epochs(env, EpisodeProgress(), 2), KEY)
    for other in (
        EpisodeKey(**{**KEY.__dict__, "episode": 1}),
        EpisodeKey(**{**KEY.__dict__, "run_id": "another"}),
        EpisodeKey(**{**KEY.__dict__, "seed": 6}),
    ):
        with pytest.raises(CheckpointError, match="not of"):
            restore(fresh_env(digits), blob, other)


@pytest.mark.parametrize(
    "blob", [b"", b"not a checkpoint", b"\x80\x04K\x01.", bytes(range(256))], ids=["empty", "text", "int", "noise"]
)
def test_garbage_is_a_checkpoint_error_not_a_crash(digits: tuple[TaskSpec, TaskData], blob: bytes) -> None:
    with pytest.raises(CheckpointError):
        restore(fresh_env(digits), blob, KEY)


def test_a_truncated_checkpoint_is_refused(digits: tuple[TaskSpec, TaskData]) -> None:
    env = fresh_env(digits)
    blob = capture(env, run_epochs(env, EpisodeProgress(), 2), KEY)
    with pytest.raises(CheckpointError):
        restore(fresh_env(digits), blob[: len(blob) // 2], KEY)


def test_last_op_survives_the_round_trip(digits: tuple[TaskSpec, TaskData]) -> None:
    env = fresh_env(digits)
    progress = run_epochs(env, EpisodeProgress(), 2)
    progress.last_op, progress.last_ok = LifecycleOp.PRUNE, False
    back = restore(fresh_env(digits), capture(env, progress, KEY), KEY)
    assert (back.last_op, back.last_ok, back.policy_state) == (LifecycleOp.PRUNE, False, progress.policy_state)


def test_the_checkpoint_benchmark_measures_each_epoch_and_its_checkpoint_side_by_side() -> None:
    from services.tolaria.bench import checkpoint_cost

    result = checkpoint_cost(task_name="digits", synthetic=False, epochs=2, batches=2, batch=32, seed=3)
    assert len(result["epoch_s"]) == len(result["capture_s"]) == len(result["restore_s"]) == 2
    assert result["seed_params"] > 0 and result["blob_bytes"] > 4 * result["total_params"]
    assert result["capture_over_epoch"] > 0 and result["restore_over_epoch"] > 0
