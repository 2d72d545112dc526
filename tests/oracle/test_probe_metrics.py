"""Probe metrics on held-out labels (plans/counterfactual-oracle.md §8–9; O19)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.simic.probe_metrics import (
    auroc,
    calibration_ratio,
    episode_bootstrap,
    mae_by_confidence,
    pearson,
)


def test_auroc_of_a_perfect_an_inverted_and_a_constant_scorer() -> None:  # O19
    labels = [False, False, True, True]
    assert auroc([0.1, 0.2, 0.8, 0.9], labels) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], labels) == 0.0
    assert auroc([0.5, 0.5, 0.5, 0.5], labels) == 0.5
    assert auroc([0.1, 0.2], [True, True]) is None, "one class only: undefined, not 0.5"


def test_pearson_of_a_constant_predictor_is_undefined_never_zero() -> None:  # O19
    assert pearson([1.0, 1.0, 1.0], [0.1, 0.5, 0.9]) is None
    assert pearson([1.0], [2.0]) is None
    assert pearson([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]) == pytest.approx(1.0)
    assert pearson([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        pearson([1.0], [1.0, 2.0])


@given(st.lists(st.tuples(st.floats(-5, 5), st.booleans()), min_size=2, max_size=40))
def test_auroc_equals_the_pairwise_definition(points: list[tuple[float, bool]]) -> None:
    scores, labels = [s for s, _ in points], [lab for _, lab in points]
    pos = [s for s, lab in points if lab]
    neg = [s for s, lab in points if not lab]
    got = auroc(scores, labels)
    if not pos or not neg:
        assert got is None
        return
    expected = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg) / (len(pos) * len(neg))
    assert got == pytest.approx(expected)


def test_calibration_and_confidence_quartiles() -> None:
    assert calibration_ratio([1.0, -1.0], [0.0, 0.0], [1.0, 1.0]) == 1.0
    assert calibration_ratio([2.0], [0.0], [1.0]) == 4.0  # overconfident: errors larger than σ says
    assert calibration_ratio([], [], []) is None
    y = [0.0] * 8
    mu = [0.1, 0.1, 0.5, 0.5, 0.5, 0.5, 2.0, 2.0]
    variance = [0.1, 0.2, 1.0, 1.0, 1.0, 1.0, 3.0, 4.0]
    assert mae_by_confidence(y, mu, variance) == (pytest.approx(0.1), pytest.approx(2.0))
    assert mae_by_confidence([0.0], [1.0], [1.0]) == (None, None)


def test_the_episode_bootstrap_resamples_whole_episodes() -> None:
    rng = random.Random(1)
    # 30 episodes; within an episode the prediction error is shared (correlated rows), between episodes it is not.
    episodes = {}
    for e in range(30):
        shift = rng.gauss(0, 1)
        episodes[e] = [(t, t + shift) for t in (rng.gauss(0, 1) for _ in range(20))]

    def corr(rows: list[tuple[float, float]]) -> float | None:
        return pearson([a for a, _ in rows], [b for _, b in rows])

    interval = episode_bootstrap(episodes, corr, resamples=500, seed=3)
    assert interval.episodes == 30 and interval.rows == 600 and interval.undefined_draws == 0
    assert interval.low is not None and interval.high is not None
    assert interval.low < interval.estimate < interval.high  # type: ignore[operator]
    again = episode_bootstrap(episodes, corr, resamples=500, seed=3)
    assert again == interval, "same seed, same interval"
    # An undefined statistic on every draw: the interval is missing, not made up.
    constant = episode_bootstrap({0: [(1.0, 1.0)], 1: [(1.0, 2.0)]}, corr, resamples=50)
    assert constant.estimate is None and constant.low is None and constant.undefined_draws == 50
    empty = episode_bootstrap({}, corr, resamples=10)
    assert (empty.estimate, empty.episodes) == (None, 0)
    with pytest.raises(ValueError):
        episode_bootstrap(episodes, corr, level=1.0)
    assert math.isfinite(interval.as_dict()["estimate"])  # type: ignore[arg-type]
