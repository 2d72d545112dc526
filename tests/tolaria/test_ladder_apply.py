"""Tolaria applying SetInternalLevel to a conv ladder on the digits host (plans/kasmina2-phase0.md §6.5, §6.8;
invariants 24, 26, 27, 29, 41): the seed optimizer survives a level change with only the toggled rung's state
cleared, a mismatched mutation is refused and its slot reverted, a rollback restores a fossil's level, published
level events carry the active parameters, and a host checkpoint round-trips a ladder at any level."""

from __future__ import annotations

import random

import msgspec
import pytest
import torch

from leyline_schemas import (
    SEED_INTERNALS,
    AlphaAlgorithm,
    AlphaControllerState,
    AlphaMode,
    BlendId,
    BlueprintAction,
    DecisionOutcome,
    FactoredAction,
    Germinate,
    LifecycleOp,
    SeedGerminated,
    SeedInternalLevelChanged,
    SeedStage,
    SetInternalLevel,
    SlotState,
    StepDirective,
)
from services.kasmina.mechanics.ladder import ConvLadderSeed
from services.kasmina.mechanics.lifecycle import germinate_state
from services.tolaria.env import EpisodeEnv
from services.tolaria.governor import state_digest
from services.tolaria.host_checkpoint import EpisodeKey, EpisodeProgress, capture, restore
from services.tolaria.publishing import applied_lifecycle_events
from services.tolaria.tasks import TaskData, TaskSpec, get_task

B = BlueprintAction
SPEC = SEED_INTERNALS[B.CONV_LADDER]
KEY = EpisodeKey(run_id="ladder", env_id=0, episode=0, task="digits", seed=11)
SLOTS = ("r0c0", "r0c1", "r0c2")


def rung_size(channels: int) -> int:
    return 9 * channels * channels + 3 * channels


@pytest.fixture(scope="module")
def digits() -> tuple[TaskSpec, TaskData]:
    task = get_task("digits")
    return task, task.load_data(7, False, None)


def make_env(digits: tuple[TaskSpec, TaskData]) -> EpisodeEnv:
    task, data = digits
    return EpisodeEnv(task, data, list(SLOTS), seed=KEY.seed, episode_length=20, batch_size=64, max_batches=4)


def directive(
    env: EpisodeEnv,
    op: LifecycleOp,
    slot: str,
    mutations: list[object],
    slots: list[SlotState],
    events: list[object],
    epoch: int,
) -> StepDirective:
    return StepDirective(
        run_id="r",
        env_id=0,
        episode=0,
        epoch=epoch,
        outcome=DecisionOutcome.APPLIED,
        effective_op=op,
        raw_action=FactoredAction(op=op, slot=SLOTS.index(slot)),
        target_slot=slot,
        mutations=mutations,  # type: ignore[arg-type]
        observed_slots=list(env.slot_states),
        slots=slots,
        lifecycle_events=events,  # type: ignore[arg-type]
    )


def seat_ladder(
    env: EpisodeEnv, slot: str = "r0c1", stage: SeedStage = SeedStage.TRAINING, alpha: float = 0.0
) -> StepDirective:
    """Germinate a ladder through `apply`, as Kasmina's germination directive has it, then seat it in `stage`."""
    change = germinate_state(
        slot, f"{slot}-ladder", B.CONV_LADDER, BlendId.LINEAR, AlphaAlgorithm.ADD, 5, 1.0, 1, env.host_params, 50.0
    )
    germinated = msgspec.structs.replace(
        change.state,
        internal_kind=SPEC.kind,
        internal_level=SPEC.initial_level,
        internal_max_level=SPEC.max_level,
    )
    mutation = Germinate(
        slot_id=slot,
        seed_id=germinated.seed_id,
        blueprint=B.CONV_LADDER,
        blend=BlendId.LINEAR,
        alpha_algorithm=AlphaAlgorithm.ADD,
        blend_tempo_epochs=5,
        alpha_target=1.0,
    )
    event = SeedGerminated(slot_id=slot, seed_id=germinated.seed_id, blueprint=B.CONV_LADDER, internal_level=1)
    slots = [germinated if s.slot_id == slot else s for s in env.slot_states]
    germination = directive(env, LifecycleOp.GERMINATE, slot, [mutation], slots, [event], 1)
    assert env.apply(germination) == []
    mode = AlphaMode.HOLD
    seated = msgspec.structs.replace(
        germinated,
        stage=stage,
        isolate_gradients=True,
        controller=AlphaControllerState(alpha=alpha, alpha_start=alpha, alpha_target=alpha, mode=mode),
    )
    env.slot_states = [seated if s.slot_id == slot else s for s in env.slot_states]
    env.model.apply_states(env.slot_states)
    return germination


def level_change(
    env: EpisodeEnv, to_level: int, slot: str = "r0c1", epoch: int = 2, from_level: int | None = None
) -> StepDirective:
    """Kasmina's answer to GROW/SHRINK_INTERNAL on `slot`: the new state, one SetInternalLevel and its event."""
    state = next(s for s in env.slot_states if s.slot_id == slot)
    start = state.internal_level if from_level is None else from_level
    moved = msgspec.structs.replace(state, internal_level=to_level, internal_level_changed_epoch=epoch)
    mutation = SetInternalLevel(slot_id=slot, seed_id=state.seed_id, from_level=start, to_level=to_level)
    event = SeedInternalLevelChanged(
        slot_id=slot,
        seed_id=state.seed_id,
        blueprint=state.blueprint,
        internal_kind=state.internal_kind,
        from_level=start,
        to_level=to_level,
        max_level=state.internal_max_level,
    )
    op = LifecycleOp.GROW_INTERNAL if to_level > start else LifecycleOp.SHRINK_INTERNAL
    slots = [moved if s.slot_id == slot else s for s in env.slot_states]
    return directive(env, op, slot, [mutation], slots, [event], epoch)


def ladder_of(env: EpisodeEnv, slot: str = "r0c1") -> ConvLadderSeed:
    seed = env.model.slot(slot).seed
    assert isinstance(seed, ConvLadderSeed)
    return seed


def rung_state(env: EpisodeEnv, rung: int, slot: str = "r0c1") -> list[dict[str, torch.Tensor]]:
    optimizer = env.seed_optimizers[slot]
    return [
        {k: v.clone() for k, v in optimizer.state[p].items()} if p in optimizer.state else {}
        for p in ladder_of(env, slot).rung_parameters(rung)
    ]


def rung_weights(env: EpisodeEnv, rung: int, slot: str = "r0c1") -> list[torch.Tensor]:
    return [p.detach().clone() for p in ladder_of(env, slot).rung_parameters(rung)]


def momentum(env: EpisodeEnv) -> str:
    state = env.host_optimizer.state_dict()["state"]
    return state_digest({str(index): entry["momentum_buffer"] for index, entry in state.items()})


def same(
    a: list[dict[str, torch.Tensor]] | list[torch.Tensor], b: list[dict[str, torch.Tensor]] | list[torch.Tensor]
) -> bool:
    def equal(x: object, y: object) -> bool:
        if isinstance(x, dict) and isinstance(y, dict):
            return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
        assert isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)
        return torch.equal(x, y)

    return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b, strict=True))


# --------------------------------------------------------------------------- invariants 24 and 26


def test_a_level_change_keeps_the_seed_optimizer_and_clears_only_the_toggled_rung(digits) -> None:  # type: ignore[no-untyped-def]
    env = make_env(digits)
    seat_ladder(env)
    idle = [rung_weights(env, i) for i in range(1, SPEC.max_level)]
    env.run_epoch(1)
    assert all(same(rung_weights(env, i), idle[i - 1]) for i in range(1, SPEC.max_level)), "inactive rungs move"
    optimizer, host_optimizer, host_state = env.seed_optimizers["r0c1"], env.host_optimizer, momentum(env)
    assert all(state for state in rung_state(env, 0)) and not any(rung_state(env, 1))

    assert env.apply(level_change(env, 2)) == []
    assert env.model.slot("r0c1").internal_level == 2 == env.slot_states[1].internal_level
    assert env.seed_optimizers["r0c1"] is optimizer
    assert env.host_optimizer is host_optimizer and momentum(env) == host_state, "the host optimizer is untouched"
    env.run_epoch(2)
    rung0, rung1 = rung_state(env, 0), rung_state(env, 1)
    assert all(rung1), "the grown rung trains and gathers momentum"

    assert env.apply(level_change(env, 1, epoch=3)) == []
    assert env.seed_optimizers["r0c1"] is optimizer
    assert same(rung_state(env, 0), rung0), "the rung that stays keeps its momentum"
    assert not any(rung_state(env, 1)), "the toggled rung has no state"
    shrunk = rung_weights(env, 1)
    env.run_epoch(3)
    assert same(rung_weights(env, 1), shrunk), "a shrunk rung stays bit-identical while inactive"

    rung0 = rung_state(env, 0)
    assert env.apply(level_change(env, 2, epoch=4)) == []
    assert same(rung_state(env, 0), rung0) and not any(rung_state(env, 1))


# --------------------------------------------------------------------------- invariant 27


def test_a_set_internal_level_that_does_not_fit_is_refused_and_its_slot_reverted(digits) -> None:  # type: ignore[no-untyped-def]
    env = make_env(digits)
    seat_ladder(env)
    env.run_epoch(1)
    observed = env.slot_states[1]
    optimizer = env.seed_optimizers["r0c1"]
    rung0 = rung_state(env, 0)
    wrong_from = level_change(env, 3, from_level=2)
    wrong_seed = msgspec.structs.replace(
        wrong_from,
        mutations=[SetInternalLevel(slot_id="r0c1", seed_id="someone-else", from_level=1, to_level=2)],
    )
    past_max = level_change(env, SPEC.max_level + 1, from_level=1)
    for bad in (wrong_from, wrong_seed, past_max):
        refused = env.apply(bad)
        assert [(r.slot_id, r.mutation) for r in refused] == [("r0c1", "set_internal_level")]
        assert env.slot_states[1] == observed and env.model.slot("r0c1").internal_level == 1
        assert env.seed_optimizers["r0c1"] is optimizer and same(rung_state(env, 0), rung0)
        assert applied_lifecycle_events(env, bad, refused=True) == [], "a refused change publishes no level event"

    # A slot without a ladder refuses the mutation the same way.
    empty = level_change(env, 1, slot="r0c0", from_level=0)
    refused = env.apply(empty)
    assert [(r.slot_id, r.mutation) for r in refused] == [("r0c0", "set_internal_level")]
    assert env.slot_states[0] == SlotState(slot_id="r0c0")


def test_a_directive_whose_states_contradict_its_level_change_falls_back_to_the_observed_level(digits) -> None:  # type: ignore[no-untyped-def]
    env = make_env(digits)
    seat_ladder(env)
    change = level_change(env, 2)
    wrong = msgspec.structs.replace(change.slots[1], internal_level=3)
    contradicting = msgspec.structs.replace(change, slots=[change.slots[0], wrong, change.slots[2]])
    refused = env.apply(contradicting)
    assert [r.mutation for r in refused] == ["directive"]
    assert env.model.slot("r0c1").internal_level == 1 == env.slot_states[1].internal_level
    assert applied_lifecycle_events(env, contradicting, refused=True) == []


# --------------------------------------------------------------------------- invariant 41


def test_published_level_events_carry_the_active_params_after_the_apply(digits) -> None:  # type: ignore[no-untyped-def]
    env = make_env(digits)
    germination = seat_ladder(env)
    (born,) = applied_lifecycle_events(env, germination, refused=False)
    assert isinstance(born, SeedGerminated) and born.params == rung_size(32) == env.model.slot("r0c1").seed_param_count
    for to_level, epoch in ((2, 2), (3, 3), (2, 4)):
        change = level_change(env, to_level, epoch=epoch)
        assert env.apply(change) == []
        (event,) = applied_lifecycle_events(env, change, refused=False)
        assert isinstance(event, SeedInternalLevelChanged) and event.to_level == to_level
        assert event.active_params == env.model.slot("r0c1").seed_param_count == to_level * rung_size(32)
        # A refusal elsewhere in the step does not drop a level change that did happen.
        assert applied_lifecycle_events(env, change, refused=True) == [event]
    assert env.model.active_seed_params == 2 * rung_size(32)


# --------------------------------------------------------------------------- invariant 29


def test_a_governor_rollback_restores_a_fossil_ladders_level_and_prunes_the_live_one(digits) -> None:  # type: ignore[no-untyped-def]
    env = make_env(digits)
    seat_ladder(env, "r0c0", SeedStage.HOLDING, alpha=1.0)
    assert env.apply(level_change(env, 3, slot="r0c0")) == []
    fossil = msgspec.structs.replace(env.slot_states[0], stage=SeedStage.FOSSILIZED)
    env.slot_states = [fossil, *env.slot_states[1:]]
    env.model.apply_states(env.slot_states)
    env.run_epoch(1)  # the fossil's level-3 rungs train on
    env._snapshot()
    weights = state_digest({k: v for k, v in env.model.state_dict().items() if k.startswith("slots.r0c0.")})
    seat_ladder(env, "r0c1")
    assert env.apply(level_change(env, 2, epoch=3)) == []
    # Damage the fossil behind the slot's back: the rollback must bring back its level and weights.
    ladder_of(env, "r0c0").set_internal_level(1)
    with torch.no_grad():
        ladder_of(env, "r0c0").rungs[0].scale.add_(1.0)
        next(env.model.host.parameters()).fill_(float("nan"))
    outcome = env.run_epoch(4)
    assert outcome.rollback is not None and outcome.rollback.pruned_slots == ["r0c1"]
    assert env.model.slot("r0c0").internal_level == 3 == env.slot_states[0].internal_level
    assert state_digest({k: v for k, v in env.model.state_dict().items() if k.startswith("slots.r0c0.")}) == weights
    assert env.slot_states[1].stage is SeedStage.PRUNED and not env.model.slot("r0c1").has_seed


# --------------------------------------------------------------------------- host checkpoint


@pytest.mark.parametrize("level", range(SPEC.max_level + 1))
def test_a_host_checkpoint_round_trips_a_ladder_at_any_level(digits, level: int) -> None:  # type: ignore[no-untyped-def]
    env = make_env(digits)
    seat_ladder(env, stage=SeedStage.BLENDING, alpha=0.5)
    env.run_epoch(1)
    for step, to_level in enumerate(range(2, SPEC.max_level + 1)):
        assert env.apply(level_change(env, to_level, epoch=2 + step)) == []
    env.run_epoch(2)  # every rung trains and gathers momentum
    for step, to_level in enumerate(range(SPEC.max_level - 1, level - 1, -1)):
        assert env.apply(level_change(env, to_level, epoch=10 + step)) == []
    blob = capture(env, EpisodeProgress(), KEY)  # no step records: the loop's progress is not under test
    resumed = make_env(digits)
    restore(resumed, blob, KEY)
    assert resumed.model.slot("r0c1").internal_level == level == resumed.slot_states[1].internal_level
    assert state_digest(resumed.model.state_dict()) == state_digest(env.model.state_dict())
    for rung in range(SPEC.max_level):
        assert same(rung_state(resumed, rung), rung_state(env, rung))
    x = env.val_batches[0][0][:8]
    env.model.eval()
    resumed.model.eval()
    with torch.no_grad():
        assert torch.equal(resumed.model(x), env.model(x))
    # Both go on from the same random streams: the resumed env's were restored, the original's are put back.
    streams = torch.get_rng_state(), random.getstate()
    expected = env.run_epoch(3).report
    torch.set_rng_state(streams[0])
    random.setstate(streams[1])
    assert resumed.run_epoch(3).report.val_loss == expected.val_loss
