"""Pareto dominance, frontier and the 2-D hypervolume against (0, 2.0), checked against hand-computed cases."""

from __future__ import annotations

import pytest

from services.karn.pareto import OutcomePoint, dominates, hypervolume, pareto_frontier


def p(accuracy: float, ratio: float, episode: int = 0) -> OutcomePoint:
    return OutcomePoint(accuracy, ratio, env_id=0, episode=episode)


def test_dominance_needs_no_worse_on_both_and_better_on_one() -> None:
    assert dominates(p(90, 1.2), p(80, 1.5))
    assert dominates(p(90, 1.2), p(90, 1.5))  # equal accuracy, fewer parameters
    assert not dominates(p(90, 1.2), p(90, 1.2))  # identical points do not dominate each other
    assert not dominates(p(90, 1.5), p(80, 1.2))  # a trade-off


def test_frontier_keeps_trade_offs_and_drops_dominated_points() -> None:
    points = [p(90, 1.5, 0), p(80, 1.2, 1), p(85, 1.6, 2), p(70, 1.0, 3), p(70, 1.1, 4)]
    frontier = pareto_frontier(points)
    assert [(q.final_accuracy, q.param_ratio) for q in frontier] == [(90, 1.5), (80, 1.2), (70, 1.0)]


def test_hypervolume_of_two_points_is_the_union_of_their_rectangles() -> None:
    # Rectangles [0,90]x[1.5,2.0] (45) and [0,80]x[1.2,2.0] (64) overlap on [0,80]x[1.5,2.0] (40): 45 + 64 - 40.
    assert hypervolume([p(90, 1.5), p(80, 1.2)]) == pytest.approx(69.0)


def test_hypervolume_of_one_point_and_of_points_outside_the_reference() -> None:
    assert hypervolume([p(94.859, 1.0)]) == pytest.approx(94.859)
    assert hypervolume([p(50, 2.5)]) == 0.0  # more than twice the host: outside the reference box
    assert hypervolume([]) == 0.0
    # Dominated points add nothing: the frontier's volume is the whole set's volume.
    points = [p(90, 1.5), p(80, 1.2), p(85, 1.6), p(60, 1.9)]
    assert hypervolume(points) == pytest.approx(hypervolume(pareto_frontier(points)))


def test_hypervolume_against_another_reference_point() -> None:
    assert hypervolume([p(90, 1.5)], reference=(50.0, 2.0)) == pytest.approx(40 * 0.5)
