"""The anti-thrash statistics of a seed's level trajectory (plans/kasmina2-phase0.md §9 item 3, §8.3, invariant 43)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.observation.level_trajectory import (
    GROW,
    SHRINK,
    THRASH_REVERSAL_RATE,
    LevelTrajectoryStats,
    density_band,
    direction,
    level_trajectory_stats,
    reversal_band,
    reversal_rate,
    reversals,
    settled,
    windowed_reversal_rate,
)

G, S = GROW, SHRINK
trajectories = st.lists(st.sampled_from([GROW, SHRINK]), max_size=40)


def test_invariant_43_grow_grow_shrink_grow_and_a_single_op() -> None:
    stats = level_trajectory_stats([G, G, S, G], live_epochs=8)
    assert (stats.ops, stats.reversals, stats.net_level_change) == (4, 2, 2)
    assert stats.reversal_rate == pytest.approx(2 / 3)
    assert stats.density == pytest.approx(0.5)
    single = level_trajectory_stats([S], live_epochs=3)
    assert (single.ops, single.reversals, single.reversal_rate, single.net_level_change) == (1, 0, 0.0, -1)
    assert level_trajectory_stats([], live_epochs=0) == LevelTrajectoryStats(0, 0, 0.0, 0, 0.0)


@given(trajectories, st.integers(0, 40))
def test_net_change_is_the_sum_and_reversals_are_bounded(directions: list[int], spare: int) -> None:
    stats = level_trajectory_stats(directions, live_epochs=len(directions) + spare)
    assert stats.net_level_change == sum(directions) == directions.count(G) - directions.count(S)
    assert 0 <= stats.reversals <= max(0, stats.ops - 1)
    assert 0.0 <= stats.reversal_rate <= 1.0
    # Net change and reversals trade off: a trajectory of r reversals has |net| ≤ ops − r (each reversal cancels).
    assert abs(stats.net_level_change) <= stats.ops - stats.reversals
    assert 0.0 <= stats.density <= 1.0
    assert stats.ops == 0 or stats.density == pytest.approx(stats.ops / (stats.ops + spare))


@given(trajectories)
def test_a_monotone_trajectory_never_reverses_and_an_alternating_one_always_does(directions: list[int]) -> None:
    n = len(directions)
    assert reversals([G] * n) == 0 and reversal_rate([S] * n) == 0.0
    alternating = [G if i % 2 == 0 else S for i in range(n)]
    assert reversals(alternating) == max(0, n - 1)
    assert reversal_rate(alternating) == (1.0 if n >= 2 else 0.0)


@given(trajectories)
def test_reversing_the_order_or_flipping_every_sign_keeps_the_reversals(directions: list[int]) -> None:
    assert reversals(directions[::-1]) == reversals(directions)
    assert reversals([-d for d in directions]) == reversals(directions)


def test_more_ops_than_live_epochs_or_a_bad_direction_raises() -> None:
    with pytest.raises(ValueError, match="3 ops in 2 live epochs"):
        level_trajectory_stats([G, S, G], live_epochs=2)
    with pytest.raises(ValueError, match="direction 1 is 2"):
        reversals([G, 2])
    with pytest.raises(ValueError, match="exactly one level"):
        direction(1, 3)
    assert (direction(1, 2), direction(2, 1)) == (G, S)


def test_the_thrash_window_of_simic_section_8_3() -> None:
    # Invariant 37's trajectory: G, S, G, S, G reverses every time.
    assert windowed_reversal_rate([G, S, G, S, G]) == 1.0 > THRASH_REVERSAL_RATE
    assert windowed_reversal_rate([G, S, G]) == 0.0, "fewer than 4 ops never count"
    # Only the last 10 ops: a long calm prefix does not dilute a thrashing tail.
    assert windowed_reversal_rate([G] * 30 + [S, G] * 5) == pytest.approx(9 / 9)
    assert windowed_reversal_rate([S, G] * 5 + [G] * 10) == 0.0
    with pytest.raises(ValueError, match="window"):
        windowed_reversal_rate([G, S], window=1)


@given(trajectories, st.integers(2, 12), st.integers(2, 12))
def test_the_window_rate_is_the_rate_of_the_tail(directions: list[int], window: int, min_ops: int) -> None:
    tail = directions[-window:]
    expected = reversal_rate(tail) if len(tail) >= min_ops else 0.0
    assert windowed_reversal_rate(directions, window, min_ops) == expected


def test_settled_means_no_change_in_the_last_five_live_epochs() -> None:
    live = list(range(3, 15))  # epochs 3..14 live: the last five are 10..14
    assert settled([4, 9], live)
    assert not settled([4, 10], live)
    assert settled([], live) and settled([], [])
    assert not settled([5], [4, 5, 6]), "with fewer than five live epochs all of them count"
    assert not settled([20], live), "a change after every live epoch is not settled"


def test_bands_follow_the_section_9_table() -> None:
    assert [density_band(x) for x in (0.2, 0.5, 0.61)] == ["healthy", "caution", "thrash"]
    assert [reversal_band(x) for x in (0.1, 0.29, 0.3, 0.7, 0.71)] == [
        "healthy",
        "healthy",
        "caution",
        "caution",
        "thrash",
    ]
