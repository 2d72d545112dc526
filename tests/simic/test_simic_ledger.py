"""The step ledger (services/simic/ledger.py): no record is acked before the update that consumed it is committed,
and every record is acked once its round commits, whatever order episodes and their redeliveries arrive in."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leyline_schemas import ArmSpec, RunSpec
from leyline_schemas.rounds import round_of_episode, total_rounds
from services.simic.ledger import StepLedger

SPEC = RunSpec(run_id="r", episodes=6, n_envs=2, arms=[ArmSpec(arm_id="a", policy_id="p")], learn=True)


def _episode(e: int) -> tuple[str, int, int]:
    return ("r", e % SPEC.n_envs, e)


@settings(max_examples=150, deadline=None)
@given(order=st.permutations(range(SPEC.episodes)), copies=st.lists(st.integers(0, SPEC.episodes - 1), max_size=6))
def test_records_are_acked_only_by_the_commit_of_their_round(order: list[int], copies: list[int]) -> None:
    ledger: StepLedger[str] = StepLedger()
    arm = ledger.open_arm(SPEC, 0, 0)
    acked: list[str] = []
    sent: list[str] = []
    arrived: list[int] = []
    for e in order:
        sent.append(f"m{e}")
        acked += ledger.hand_on(_episode(e), arm, [f"m{e}"])
        arrived.append(e)
        for c in (c for c in copies if c in arrived):
            sent.append(f"copy{c}")
            acked += ledger.hand_on(_episode(c), arm, [f"copy{c}"])  # a redelivery of a handed-on episode
        while ledger.ready(arm):
            round_index = ledger.committed(arm)
            assert not [m for m in acked if round_of_episode(SPEC, int(m.lstrip("mcopy"))) >= round_index]
            acked += ledger.commit(arm, round_index)
    assert ledger.committed(arm) == total_rounds(SPEC)
    assert ledger.held() == []
    assert sorted(acked) == sorted(sent)  # every record and every copy acked, each exactly once
    assert ledger.close_if_finished(arm) and ledger.is_finished(arm)


def test_a_round_cannot_be_committed_before_it_is_complete() -> None:
    ledger: StepLedger[str] = StepLedger()
    arm = ledger.open_arm(SPEC, 0, 0)
    assert ledger.hand_on(_episode(0), arm, ["m0"]) == []
    with pytest.raises(RuntimeError, match="round 0 is next"):
        ledger.commit(arm, 0)
    assert ledger.held() == ["m0"]


def test_an_episode_of_a_round_applied_before_a_restart_is_acked_at_once() -> None:
    ledger: StepLedger[str] = StepLedger()
    arm = ledger.open_arm(SPEC, 0, 1)  # the checkpoint holds round 0
    assert ledger.hand_on(_episode(0), arm, ["m0"]) == ["m0"]
    assert ledger.hand_on(_episode(2), arm, ["m2"]) == []


def test_an_untrained_episode_is_acked_with_its_copies() -> None:
    ledger: StepLedger[str] = StepLedger()
    assert ledger.settle_untrained(("x", 0, 0), ["m0"]) == ["m0"]
