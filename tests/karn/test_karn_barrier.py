"""The epoch commit barrier (reference/tolaria_karn.md §8.6, §11.14): one snapshot per epoch whatever n_envs."""

from __future__ import annotations

import pytest

from services.karn.barrier import EnvEpoch, EpochBarrier, envs_in_round


def barrier(n_envs: int, episodes: int) -> EpochBarrier:
    return EpochBarrier(lambda r: envs_in_round(n_envs, episodes, r))


def report(env_id: int, acc: float, train: float | None = None) -> EnvEpoch:
    return EnvEpoch(env_id, acc, 1.0 - acc / 100, train_accuracy=train)


@pytest.mark.parametrize("n_envs", [1, 3, 8])
def test_exactly_one_snapshot_per_epoch_whatever_the_number_of_envs(n_envs: int) -> None:
    b = barrier(n_envs, n_envs)
    committed = []
    for epoch in range(1, 6):
        for env in range(n_envs):
            committed += b.add(0, epoch, report(env, 50.0 + env + epoch))
    assert [(c.round, c.epoch) for c in committed] == [(0, e) for e in range(1, 6)]
    assert all(c.n_reported == c.n_expected == n_envs and not c.partial for c in committed)
    assert committed[0].val_accuracy == pytest.approx(51.0 + (n_envs - 1) / 2)


def test_optional_metrics_average_only_over_measured_envs() -> None:
    b = barrier(3, 3)
    b.add(0, 1, report(0, 60.0, train=70.0))
    b.add(0, 1, report(1, 62.0, train=None))
    (c,) = b.add(0, 1, report(2, 64.0, train=80.0))
    assert c.val_accuracy == pytest.approx(62.0)
    assert c.train_accuracy == pytest.approx(75.0)  # None means "not measured", never 0.0
    assert c.train_loss is None


def test_a_repeated_report_replaces_the_first_and_a_committed_epoch_stays_closed() -> None:
    b = barrier(2, 2)
    assert b.add(0, 1, report(0, 10.0)) == []
    assert b.add(0, 1, report(0, 20.0)) == []  # a restarted episode re-reports: replaced, not double counted
    (c,) = b.add(0, 1, report(1, 40.0))
    assert c.val_accuracy == pytest.approx(30.0)
    assert b.add(0, 1, report(1, 99.0)) == []
    assert b.flush() == []


def test_a_round_is_flushed_partial_once_every_env_has_left_it() -> None:
    b = barrier(2, 4)
    b.add(0, 1, report(0, 50.0))
    b.add(0, 1, report(1, 52.0))
    b.add(0, 2, report(0, 60.0))  # env 1's epoch 2 of round 0 is lost
    assert b.add(1, 1, report(0, 70.0)) == []  # env 1 is still in round 0
    flushed = b.add(1, 1, report(1, 72.0))
    assert [(c.round, c.epoch, c.n_reported, c.partial) for c in flushed] == [(0, 2, 1, True), (1, 1, 2, False)]
    assert flushed[0].val_accuracy == pytest.approx(60.0)


def test_explicit_flush_at_run_end_and_the_short_last_round() -> None:
    assert [envs_in_round(4, 10, r) for r in range(4)] == [4, 4, 2, 0]
    b = barrier(4, 10)
    (c,) = [*b.add(2, 1, report(0, 80.0)), *b.add(2, 1, report(1, 82.0))]
    assert c.n_expected == 2 and not c.partial  # the last round has only episodes 8 and 9
    b.add(2, 2, report(0, 90.0))
    (partial,) = b.flush()
    assert (partial.epoch, partial.n_reported, partial.n_expected) == (2, 1, 2)
    with pytest.raises(ValueError, match="at least one env"):
        envs_in_round(0, 3, 0)


def test_unknown_shape_waits_for_a_flush_and_restored_commits_stay_closed() -> None:
    b = EpochBarrier(lambda r: None)
    assert b.add(0, 1, report(0, 10.0)) == []
    (c,) = b.flush()
    assert (c.n_reported, c.n_expected) == (1, 1)
    restored = barrier(2, 2)
    restored.mark_committed(0, 1)
    assert restored.add(0, 1, report(0, 10.0)) == [] and restored.flush() == []
