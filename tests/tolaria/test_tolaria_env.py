"""One env's episode: real training, the governor's rollback restoring the host bit for bit, mutations applied."""

from __future__ import annotations

import math

import msgspec
import pytest
import torch

from leyline_schemas import (
    BlueprintAction,
    DecisionOutcome,
    FactoredAction,
    Germinate,
    LifecycleOp,
    SeedStage,
    SlotState,
    StepDirective,
)
from leyline_schemas.enums import SurfaceType
from services.kasmina.mechanics.lifecycle import advance_state, germinate_state
from services.tolaria.env import EpisodeEnv
from services.tolaria.governor import state_equal
from services.tolaria.tasks import get_task


@pytest.fixture(scope="module")
def digits():  # type: ignore[no-untyped-def]
    task = get_task("digits")
    return task, task.load_data(7, False, None)


def make_env(digits, length: int = 20) -> EpisodeEnv:  # type: ignore[no-untyped-def]
    task, data = digits
    return EpisodeEnv(
        task, data, list(task.default_slots), seed=11, episode_length=length, batch_size=64, max_batches=4
    )


def germination(
    env: EpisodeEnv,
    slot: str,
    seed_id: str,
    observed: list[SlotState],
    epoch: int = 1,
    blueprint: BlueprintAction = BlueprintAction.NORM,
) -> StepDirective:
    """A directive germinating a `blueprint` seed in `slot`, as Kasmina answers one (observed = the ticked states)."""
    index = [s.slot_id for s in observed].index(slot)
    change = germinate_state(
        slot,
        seed_id,
        blueprint,
        observed[index].blend,
        observed[index].alpha_algorithm,
        5,
        1.0,
        epoch,
        env.host_params,
        50.0,
    )
    mutation = Germinate(
        slot_id=slot,
        seed_id=seed_id,
        blueprint=blueprint,
        blend=change.state.blend,
        alpha_algorithm=change.state.alpha_algorithm,
        blend_tempo_epochs=5,
        alpha_target=1.0,
    )
    return StepDirective(
        run_id="r",
        env_id=0,
        episode=0,
        epoch=epoch,
        outcome=DecisionOutcome.APPLIED,
        effective_op=LifecycleOp.GERMINATE,
        raw_action=FactoredAction(op=LifecycleOp.GERMINATE, slot=index),
        target_slot=slot,
        mutations=[mutation],
        observed_slots=observed,
        slots=[change.state if s.slot_id == slot else s for s in observed],
    )


def host_state(env: EpisodeEnv) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in env.model.host.state_dict().items()}


def with_training_seed(env: EpisodeEnv, slot: str = "r0c1") -> None:
    """Germinate a seed in the model and move its lifecycle state to TRAINING, as Kasmina would."""
    env.model.germinate(
        slot, BlueprintAction.CONV_SMALL, env.slot_states[1].blend, env.slot_states[1].alpha_algorithm, seed_id="s1"
    )
    change = germinate_state(
        slot,
        "s1",
        BlueprintAction.CONV_SMALL,
        env.slot_states[1].blend,
        env.slot_states[1].alpha_algorithm,
        5,
        1.0,
        1,
        env.host_params,
        50.0,
    )
    trained = advance_state(change.state, permissive=True).state
    env.slot_states = [trained if s.slot_id == slot else s for s in env.slot_states]
    env.model.apply_states(env.slot_states)


def test_a_real_epoch_trains_the_host(digits) -> None:  # type: ignore[no-untyped-def]
    env = make_env(digits)
    first = env.run_epoch(1).report
    for epoch in range(2, 6):
        last = env.run_epoch(epoch).report
    assert last.val_accuracy > first.val_accuracy and last.val_accuracy > 40.0
    assert len(last.val_loss_history) == 5 and last.host_params == env.host_params
    assert [r.slot_id for r in last.slots] == ["r0c0", "r0c1", "r0c2"]


def test_nan_rolls_back_to_the_snapshot_bit_for_bit(digits) -> None:  # type: ignore[no-untyped-def]
    env = make_env(digits)
    for epoch in range(1, 6):
        env.run_epoch(epoch)  # epoch 5 refreshes the Last-Known-Good snapshot
    snapshot = host_state(env)
    with_training_seed(env)
    env.run_epoch(6)
    with torch.no_grad():
        next(env.model.host.parameters()).fill_(float("nan"))
    outcome = env.run_epoch(7)
    assert outcome.rollback is not None and outcome.rollback.reason == "governor_nan"
    assert math.isnan(outcome.report.val_loss) and outcome.report.governor == outcome.rollback
    assert state_equal(host_state(env), snapshot), "the host must be restored bit for bit"
    assert outcome.rollback.pruned_slots == ["r0c1"]
    assert env.slot_states[1].stage is SeedStage.PRUNED and not env.model.slot("r0c1").has_seed
    assert env.seed_optimizers == {} and env.counters.rollbacks == 1
    assert [e.reason for e in outcome.rollback_events] == ["governor_nan"]
    # Training goes on from the restored host.
    assert math.isfinite(env.run_epoch(8).report.val_loss)


def test_divergence_needs_three_anomalous_epochs(digits) -> None:  # type: ignore[no-untyped-def]
    env = make_env(digits)
    for epoch in range(1, 11):
        env.run_epoch(epoch)
    snapshot = host_state(env)  # epoch 10 took the snapshot
    classifier = [m for m in env.model.host.modules() if isinstance(m, torch.nn.Linear)][-1]
    reasons = []
    for epoch in (11, 12, 13):
        with torch.no_grad():
            classifier.weight.mul_(1e4)  # a loss far above 12, 3x the mean and mean + 6 std
        outcome = env.run_epoch(epoch)
        reasons.append(outcome.rollback.reason if outcome.rollback else None)
    assert reasons == [None, None, "governor_divergence"]
    assert state_equal(host_state(env), snapshot)


def test_apply_germinates_and_refuses_what_it_cannot_build(digits) -> None:  # type: ignore[no-untyped-def]
    env = make_env(digits)
    env.run_epoch(1)
    assert env.apply(germination(env, "r0c0", "s0", env.slot_states)) == []
    assert env.model.slot("r0c0").has_seed and env.counters.germinated == 1
    assert env.model.total_params > env.host_params

    # A blueprint the topology does not have is refused, and the slot keeps its observed state.
    directive = germination(env, "r0c2", "s2", env.slot_states)
    bad = msgspec.structs.replace(directive.mutations[0], blueprint=BlueprintAction.LORA)
    bad_state = msgspec.structs.replace(directive.slots[2], blueprint=BlueprintAction.LORA)
    refused = env.apply(msgspec.structs.replace(directive, mutations=[bad], slots=[*directive.slots[:2], bad_state]))
    assert len(refused) == 1 and refused[0].slot_id == "r0c2" and refused[0].mutation == "germinate"
    assert env.slot_states[2].stage is SeedStage.DORMANT and not env.model.slot("r0c2").has_seed


def test_last_epoch_reports_terminal_shapley(digits) -> None:  # type: ignore[no-untyped-def]
    env = make_env(digits, length=3)
    env.run_epoch(1)
    with_training_seed(env)
    # Skip the G2 dwell: the test only needs a measured (blending) seed.
    state = msgspec.structs.replace(
        env.slot_states[1],
        stage=SeedStage.BLENDING,
        controller=msgspec.structs.replace(env.slot_states[1].controller, alpha=0.5),
    )
    env.slot_states = [state if s.slot_id == "r0c1" else s for s in env.slot_states]
    env.model.apply_states(env.slot_states)
    assert env.run_epoch(2).attribution is None
    outcome = env.run_epoch(3)
    attribution = outcome.attribution
    assert attribution is not None and attribution.strategy == "full_factorial" and attribution.slot_ids == ["r0c1"]
    full, empty = attribution.coalitions[frozenset({"r0c1"})], attribution.coalitions[frozenset()]
    assert abs(attribution.shapley["r0c1"].mean - (full - empty)) < 1e-9


def test_a_slot_leaving_resetting_can_be_germinated_in_the_same_step(digits) -> None:  # type: ignore[no-untyped-def]
    """Kasmina ticks RESETTING → DORMANT before the policy acts, so a germination in that step is legal."""
    env = make_env(digits)
    env.run_epoch(1)
    with_training_seed(env)
    resetting = msgspec.structs.replace(env.slot_states[1], stage=SeedStage.RESETTING)
    env.slot_states = [resetting if s.slot_id == "r0c1" else s for s in env.slot_states]
    env.model.apply_states(env.slot_states)
    assert env.model.slot("r0c1").stage is SeedStage.RESETTING and not env.model.slot("r0c1").has_seed
    ticked = [SlotState(slot_id="r0c1") if s.slot_id == "r0c1" else s for s in env.slot_states]
    assert env.apply(germination(env, "r0c1", "s9", ticked, epoch=2)) == []
    assert env.model.slot("r0c1").has_seed and env.slot_states[1].stage is SeedStage.GERMINATED


def test_seeds_at_post_attn_and_post_mlp_surfaces_start_as_identity_and_train() -> None:
    """Track A1 end to end in one env: a LoRA seed inside layer 0 (POST_ATTN) and one after its MLP (POST_MLP)."""
    task = get_task("synthetic_transformer_sublayer")
    data = task.load_data(3, True, None)
    env = EpisodeEnv(task, data, list(task.default_slots), seed=5, episode_length=8, batch_size=32, max_batches=3)
    env.run_epoch(1)
    probe = data.split.x_val[:4]
    with torch.no_grad():
        before = env.model(probe)
    for slot, seed_id in (("r0c0", "s0"), ("r0c1", "s1")):
        assert env.apply(germination(env, slot, seed_id, env.slot_states, blueprint=BlueprintAction.LORA)) == []
    surfaces = {spec.slot_id: spec.surface for spec in env.model.slot_specs()}
    assert (surfaces["r0c0"], surfaces["r0c1"]) == (SurfaceType.POST_ATTN, SurfaceType.POST_MLP)
    with torch.no_grad():
        assert torch.allclose(env.model(probe), before, atol=1e-6), "a germinated seed must be identity at birth"
    env.slot_states = [
        advance_state(s, permissive=True).state if s.slot_id in ("r0c0", "r0c1") else s for s in env.slot_states
    ]
    env.model.apply_states(env.slot_states)
    initial = {slot: [p.detach().clone() for p in env.model.seed_parameters(slot)] for slot in ("r0c0", "r0c1")}
    for epoch in (2, 3):
        report = env.run_epoch(epoch).report
        assert math.isfinite(report.val_loss)
    for slot, params in initial.items():
        moved = any(not torch.equal(p, q) for p, q in zip(params, env.model.seed_parameters(slot), strict=True))
        assert moved, f"the seed at {slot} must receive gradients and train"
