"""Coalition engine and Shapley estimates (tamiyo_simic.md §8.5–8.6, invariant 12.18)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from services.tolaria.shapley import coalitions_for, monte_carlo_coalitions, shapley_values

SLOTS = ["r0c0", "r0c1", "r0c2", "r1c0", "r1c1", "r1c2"]


def test_full_factorial_for_up_to_four_seeds() -> None:
    for n in range(5):
        strategy, coalitions = coalitions_for(SLOTS[:n])
        assert strategy == "full_factorial" and len(coalitions) == 2**n and len(set(coalitions)) == 2**n
    assert coalitions_for(SLOTS[:5])[0] == "shapley"


def test_monte_carlo_set_is_reproducible_and_holds_the_leave_one_out_set() -> None:
    first = monte_carlo_coalitions(SLOTS, samples=20, seed=7)
    assert first == monte_carlo_coalitions(SLOTS, samples=20, seed=7)
    assert first != monte_carlo_coalitions(SLOTS, samples=20, seed=8)
    members = set(first)
    assert frozenset(SLOTS) in members and frozenset() in members
    assert all(frozenset(s for s in SLOTS if s != off) in members for off in SLOTS)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.frozensets(st.sampled_from(SLOTS[:4])), st.floats(-50, 100), min_size=0))
def test_full_factorial_shapley_sums_to_grand_coalition_gain(table: dict[frozenset[str], float]) -> None:
    slots = SLOTS[:4]

    def value(coalition: frozenset[str]) -> float:
        return table.get(coalition, float(len(coalition)))

    estimates = shapley_values(slots, value)
    total = sum(e.mean for e in estimates.values())
    assert abs(total - (value(frozenset(slots)) - value(frozenset()))) < 1e-6


def test_additive_game_gives_each_slot_its_own_value() -> None:
    worth = {s: float(i + 1) for i, s in enumerate(SLOTS)}
    estimates = shapley_values(SLOTS, lambda c: sum(worth[s] for s in c), samples=20, seed=3)
    for slot, estimate in estimates.items():
        assert abs(estimate.mean - worth[slot]) < 1e-9 and estimate.std < 1e-9 and estimate.samples == 20
