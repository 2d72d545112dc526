"""The heuristic and the ladder (plans/kasmina2-phase0.md §7.2, invariant 34): the default heuristic decides exactly
as before phase 0, and `heuristic-ladder` grows a weak ladder, lets it settle, and prunes it only at its max level."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from msgspec.structs import replace

from leyline_schemas.enums import BlueprintAction, LifecycleOp, SeedStage
from leyline_schemas.lifecycle import LifecycleConfig
from leyline_schemas.policy_ids import BUILTIN_POLICY_IDS, HEURISTIC_LADDER_POLICY_ID
from services.experiments.sandbox import SandboxConfig, SandboxEpisode
from services.kasmina.step import prepare_step
from services.tamiyo.heuristic import LADDER_ROTATION, decide_heuristic
from services.tamiyo.policies import PolicyBook
from tests.kasmina.factories import empty_slots, request, seed

GOLDEN = Path(__file__).with_name("data") / "heuristic_sandbox_decisions.json"
LADDER = BlueprintAction.CONV_LADDER


def test_the_default_heuristic_decides_as_it_did_before_phase_0() -> None:
    """The golden file was written by commit f74b008 (before the ladder) over the same sandbox episodes."""
    golden = json.loads(GOLDEN.read_text())
    assert len(golden) == 18
    for key, rows in golden.items():
        n_slots, noise, env_seed = key.split("-")
        config = SandboxConfig(slots=("r0c0", "r0c1", "r0c2")[: int(n_slots)], episode_length=40, noise=float(noise))
        records = SandboxEpisode(config, seed=int(env_seed)).run(decide_heuristic)
        got = [
            [
                r.step,
                r.directive.raw_action.op.name,
                r.directive.raw_action.slot,
                r.directive.raw_action.blueprint.name,
                r.directive.decision.reason if r.directive.decision else "",
            ]
            for r in records
        ]
        assert got == rows, key


def _ladder_request(level: int, contribution: float, changed: int = -1, epoch: int = 12):  # type: ignore[no-untyped-def]
    state = seed(
        SeedStage.HOLDING, blueprint=LADDER, level=level, contribution=contribution, level_changed_epoch=changed
    )
    return prepare_step(request([state, *empty_slots(2)[1:]], epoch=epoch)).decision_request()


def _ladder_decision(level: int, contribution: float, changed: int = -1, epoch: int = 12):  # type: ignore[no-untyped-def]
    book = PolicyBook()
    req = replace(_ladder_request(level, contribution, changed, epoch), policy_id=HEURISTIC_LADDER_POLICY_ID)
    return book.get(HEURISTIC_LADDER_POLICY_ID).decide(req)


def test_heuristic_ladder_is_a_builtin_heuristic_with_the_ladder_rotation() -> None:
    assert HEURISTIC_LADDER_POLICY_ID in BUILTIN_POLICY_IDS and LADDER_ROTATION[0] is LADDER
    assert BlueprintAction.CONV_HEAVY not in LADDER_ROTATION
    req = prepare_step(request(empty_slots(3), epoch=12)).decision_request()
    req = replace(
        req, policy_id=HEURISTIC_LADDER_POLICY_ID, signals=replace(req.signals, plateau_epochs=4, host_stabilized=True)
    )
    decision = PolicyBook().get(HEURISTIC_LADDER_POLICY_ID).decide(req)
    assert decision.policy_id == HEURISTIC_LADDER_POLICY_ID
    assert (decision.action.op, decision.action.blueprint) == (LifecycleOp.GERMINATE, LADDER)
    plain = PolicyBook().get("heuristic").decide(replace(req, policy_id="heuristic"))
    assert plain.action.blueprint is BlueprintAction.CONV_LIGHT


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_a_weak_settled_ladder_grows(level: int) -> None:
    decision = _ladder_decision(level, contribution=0.2, changed=-1 if level == 1 else 5, epoch=12)
    assert decision.action.op is LifecycleOp.GROW_INTERNAL and decision.action.slot == 0
    assert "add a rung" in decision.reason


@pytest.mark.parametrize(
    ("changed", "op"), [(12, LifecycleOp.WAIT), (10, LifecycleOp.WAIT), (9, LifecycleOp.GROW_INTERNAL)]
)
def test_a_ladder_settles_three_epochs_before_the_next_rung(changed: int, op: LifecycleOp) -> None:
    assert _ladder_decision(2, contribution=0.2, changed=changed, epoch=12).action.op is op


def test_at_its_max_level_a_weak_ladder_is_pruned_and_a_good_one_fossilized() -> None:
    assert _ladder_decision(4, contribution=0.2).action.op is LifecycleOp.PRUNE
    assert _ladder_decision(2, contribution=3.0).action.op is LifecycleOp.FOSSILIZE


def test_heuristic_ladder_never_shrinks() -> None:
    for level in range(5):
        for contribution in (-2.0, 0.0, 0.3, 0.6, 4.0):
            for changed in (-1, 3, 11):
                assert _ladder_decision(level, contribution, changed).action.op is not LifecycleOp.SHRINK_INTERNAL


def test_the_rotation_skips_blueprints_the_run_does_not_allow() -> None:
    lifecycle = LifecycleConfig(max_epochs=40, blueprints=[BlueprintAction.NORM, BlueprintAction.DEPTHWISE])
    req = prepare_step(request(empty_slots(3), epoch=12, lifecycle=lifecycle)).decision_request()
    req = replace(req, signals=replace(req.signals, plateau_epochs=4, host_stabilized=True))
    assert decide_heuristic(req).action.blueprint is BlueprintAction.NORM
