"""The control cohorts' mechanics in Tolaria: the off-switch is inert (B1), static-final replays a committed
architecture from scratch (B3), and every epoch accounts its compute (B9)."""

from __future__ import annotations

import pytest
import torch

from leyline_schemas import (
    AlphaControllerState,
    BlueprintAction,
    CommittedSeed,
    DecisionOutcome,
    LifecycleOp,
    SeedStage,
    SlotState,
    StepRequest,
    Topology,
    TopologyManifest,
)
from services.kasmina.mechanics.blueprints import blueprint_catalog
from services.tolaria.controls import morphogenesis_off_directive
from services.tolaria.env import EpisodeEnv
from services.tolaria.tasks import TaskData, get_task
from services.tolaria.topology import ReplayError, manifest_hash, parameter_split, record_topology
from services.tolaria.worker import load_task_data

EPOCHS = 3


@pytest.fixture(scope="module")
def data() -> TaskData:
    return load_task_data("digits_tiny", 0, False, "")


def _env(data: TaskData, slots: list[str], replay: TopologyManifest | None = None, seed: int = 11) -> EpisodeEnv:
    task = get_task("digits_tiny")
    return EpisodeEnv(task, data, slots, seed=seed, episode_length=EPOCHS, batch_size=64, max_batches=6, replay=replay)


def _curve(env: EpisodeEnv) -> list[tuple[float, float, float, str]]:
    out = []
    for epoch in range(1, EPOCHS + 1):
        r = env.run_epoch(epoch).report
        assert r.compute is not None
        out.append((r.train_loss, r.val_loss, r.val_accuracy, r.compute.data_order_hash))
    return out


def _manifest(seeds: list[CommittedSeed], host_params: int, task: str = "digits_tiny") -> TopologyManifest:
    return TopologyManifest(
        task=task, host_params=host_params, seeds=seeds, manifest_hash=manifest_hash(task, host_params, seeds)
    )


def test_off_switch_trains_exactly_as_the_host_left_alone_with_its_slots(data: TaskData) -> None:
    off = _env(data, [])
    still = _env(data, ["r0c0", "r0c1", "r0c2"])
    assert off.model.total_params == still.model.total_params
    assert _curve(off) == _curve(still)


def test_the_off_switch_directive_is_a_wait_that_keeps_the_slots(data: TaskData) -> None:
    env = _env(data, [])
    step = StepRequest(
        run_id="r",
        env_id=1,
        episode=2,
        epoch=1,
        policy_id="wait",
        slot_config=env.slot_config(),
        lifecycle=env.lifecycle,
        report=env.run_epoch(1).report,
        slots=env.slot_states,
    )
    directive = morphogenesis_off_directive(step)
    assert directive.outcome is DecisionOutcome.MORPHOGENESIS_OFF and directive.effective_op is LifecycleOp.WAIT
    assert not directive.mutations and directive.decision is None and (directive.env_id, directive.episode) == (1, 2)
    assert not env.apply(directive)


def test_static_final_replays_the_committed_seeds_as_fossils_with_the_same_host(data: TaskData) -> None:
    grown = _env(data, ["r0c0", "r0c1", "r0c2"])
    plain = _env(data, ["r0c0", "r0c1", "r0c2"])
    light = {i.name: i for i in blueprint_catalog(Topology.CNN, 8)}["conv_light"].param_count
    seeds = [CommittedSeed(slot_id="r0c1", blueprint=BlueprintAction.CONV_LIGHT, params=light)]
    replayed = _env(data, ["r0c0", "r0c1", "r0c2"], replay=_manifest(seeds, plain.host_params))
    host_keys = [k for k in plain.model.state_dict() if k.startswith("host.")]
    assert all(torch.equal(plain.model.state_dict()[k], replayed.model.state_dict()[k]) for k in host_keys)
    state = next(s for s in replayed.slot_states if s.slot_id == "r0c1")
    assert state.stage is SeedStage.FOSSILIZED and state.controller.alpha == 1.0
    outcome = replayed.run_epoch(1)
    assert outcome.report.compute is not None
    assert outcome.report.compute.params_in_forward == replayed.host_params + seeds[0].params
    summary = replayed.summary("run", 0, 0)
    assert summary.topology is not None and summary.topology.manifest_hash == manifest_hash(
        "digits_tiny", plain.host_params, seeds
    )
    assert summary.committed_params == replayed.host_params + seeds[0].params
    assert summary.seeds_germinated == 0 and summary.parameter_epochs == replayed.host_params + seeds[0].params
    del grown


def test_a_manifest_that_does_not_fit_is_refused(data: TaskData) -> None:
    env = _env(data, ["r0c0"])
    seed = CommittedSeed(slot_id="r0c2", blueprint=BlueprintAction.CONV_LIGHT)
    with pytest.raises(ReplayError, match="not enabled"):
        _env(data, ["r0c0"], replay=_manifest([seed], env.host_params))
    with pytest.raises(ReplayError, match="host has"):
        _env(data, ["r0c0"], replay=_manifest([], env.host_params + 1))
    tampered = TopologyManifest(task="digits_tiny", host_params=env.host_params, seeds=[seed], manifest_hash="0" * 64)
    with pytest.raises(ReplayError, match="hash"):
        _env(data, ["r0c2"], replay=tampered)


def test_only_full_amplitude_seeds_are_committed(data: TaskData) -> None:
    env = _env(data, ["r0c0", "r0c1", "r0c2"])
    states = []
    for sid, stage, alpha in (
        ("r0c0", SeedStage.FOSSILIZED, 1.0),
        ("r0c1", SeedStage.BLENDING, 0.5),
        ("r0c2", SeedStage.TRAINING, 0.0),
    ):
        env.model.germinate(
            sid, BlueprintAction.CONV_SMALL, env.slot_states[0].blend, env.slot_states[0].alpha_algorithm, "s"
        )
        states.append(
            SlotState(
                slot_id=sid,
                stage=stage,
                seed_id="s",
                blueprint=BlueprintAction.CONV_SMALL,
                controller=AlphaControllerState(alpha=alpha, alpha_target=1.0),
            )
        )
    env.model.apply_states(states)
    each = [env.model.slot(sid).seed_param_count for sid in ("r0c0", "r0c1", "r0c2")]
    split = parameter_split(env.model, states)
    assert (split.committed, split.uncommitted, split.dead) == (env.host_params + each[0], each[1], each[2])
    manifest = record_topology("digits_tiny", env.model, states, run_id="r", env_id=0, episode=0)
    assert [s.slot_id for s in manifest.seeds] == ["r0c0"]


def test_every_epoch_counts_its_flops_and_parameter_epochs_add_up(data: TaskData) -> None:
    env = _env(data, ["r0c0"])
    reports = [env.run_epoch(e).report for e in range(1, EPOCHS + 1)]
    computes = [r.compute for r in reports]
    assert all(c is not None and c.train_flops == 3 * c.fwd_flops_per_sample * c.train_samples for c in computes)
    assert all(c is not None and c.train_samples == 6 * 64 and c.validation_configs == 1 for c in computes)
    assert env.summary().parameter_epochs == env.host_params * EPOCHS


@pytest.mark.parametrize("level", [0, 1, 3, 4])
def test_a_committed_ladder_replays_at_its_level(data: TaskData, level: int) -> None:
    """kasmina2 phase 0: the manifest carries a ladder's level, so static-final rebuilds the same active size."""
    env = _env(data, ["r0c1"])
    ladder = {i.name: i for i in blueprint_catalog(Topology.CNN, 8)}["conv_ladder"]
    params = ladder.level_param_counts[level]  # no gate parameters: the default blend is not GATED
    seeds = [CommittedSeed(slot_id="r0c1", blueprint=BlueprintAction.CONV_LADDER, params=params, internal_level=level)]
    replayed = _env(data, ["r0c1"], replay=_manifest(seeds, env.host_params))
    state = next(s for s in replayed.slot_states if s.slot_id == "r0c1")
    assert (state.stage, state.internal_level, state.internal_max_level) == (SeedStage.FOSSILIZED, level, 4)
    assert replayed.model.slot("r0c1").internal_level == level
    assert replayed.model.slot("r0c1").seed_param_count == params
    manifest = record_topology("digits_tiny", replayed.model, replayed.slot_states, run_id="r", env_id=0, episode=0)
    assert manifest.seeds == seeds and manifest.manifest_hash == manifest_hash("digits_tiny", env.host_params, seeds)
    too_high = [CommittedSeed(slot_id="r0c1", blueprint=BlueprintAction.CONV_LADDER, internal_level=5)]
    with pytest.raises(ReplayError, match="outside"):
        _env(data, ["r0c1"], replay=_manifest(too_high, env.host_params))
    plain_with_level = [CommittedSeed(slot_id="r0c1", blueprint=BlueprintAction.CONV_LIGHT, internal_level=1)]
    with pytest.raises(ReplayError, match="outside"):
        _env(data, ["r0c1"], replay=_manifest(plain_with_level, env.host_params))
