"""Masked hierarchical sampling: floors (12.5), canonical irrelevant heads (12.3), rollout/update agreement (12.4)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import leyline_schemas as L
from leyline_schemas.heads import CANONICAL_VALUES, causal_heads, conditioned_masks, head_sizes
from services.kasmina.masks import compute_masks
from services.policy.sampling import (
    MASKED_LOGIT,
    PROBABILITY_FLOORS,
    SAMPLING_ORDER,
    evaluate_actions,
    floored_log_probs,
    normalized_entropy,
    sample_action,
)
from tests.kasmina.factories import slot_config, slot_states

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def logits_and_mask(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, float]:
    n = draw(st.integers(min_value=1, max_value=13))
    logits = draw(st.lists(st.floats(min_value=-30, max_value=30), min_size=n, max_size=n))
    mask = draw(st.lists(st.booleans(), min_size=n, max_size=n).filter(any))
    floor = draw(st.sampled_from(sorted(set(PROBABILITY_FLOORS.values()))))
    return torch.tensor(logits), torch.tensor(mask), floor


@FAST
@given(case=logits_and_mask())
def test_the_floor_keeps_a_distribution_over_the_legal_actions(case: tuple[torch.Tensor, torch.Tensor, float]) -> None:
    logits, mask, floor = case
    log_probs = floored_log_probs(logits, mask, floor)
    probs = log_probs.exp()
    n_valid = int(mask.sum())
    f = min(floor, 0.99 / n_valid)
    assert log_probs.dtype is torch.float32
    assert math.isclose(float(probs[mask].sum()), 1.0, abs_tol=1e-5)
    assert float(probs[~mask].sum()) == 0.0 and bool((log_probs[~mask] == MASKED_LOGIT).all())
    raw = torch.softmax(torch.where(mask, logits, MASKED_LOGIT), -1)
    lifted = mask & (raw < f)
    # Single pass (§2.11): what was under the floor sits exactly on it; the rest only shrinks proportionally.
    assert torch.allclose(probs[lifted], torch.full_like(probs[lifted], f), atol=1e-6)
    entropy = float(normalized_entropy(log_probs, mask))
    assert -1e-6 <= entropy <= 1.0 + 1e-6
    if n_valid == 1:
        assert float(log_probs[mask][0]) == 0.0 and entropy == 0.0


def test_an_empty_mask_row_raises_in_rollout_and_update() -> None:
    with pytest.raises(ValueError, match="no legal action"):
        floored_log_probs(torch.zeros(4), torch.zeros(4, dtype=torch.bool), 0.1)
    masks = {head: torch.ones(2, n, dtype=torch.bool) for head, n in head_sizes(2).items()}
    masks["style"][1] = False
    logits = {head: torch.zeros(2, n) for head, n in head_sizes(2).items()}
    actions = {head: torch.zeros(2, dtype=torch.long) for head in head_sizes(2)}
    with pytest.raises(ValueError, match="no legal action"):
        evaluate_actions(logits, masks, actions)


def test_uniform_logits_give_normalized_entropy_one() -> None:
    mask = torch.tensor([True, False, True, True])
    log_probs = floored_log_probs(torch.zeros(4), mask, 0.15)
    assert math.isclose(float(normalized_entropy(log_probs, mask)), 1.0, rel_tol=1e-6)


@st.composite
def decision_inputs(draw: st.DrawFn) -> tuple[L.ActionMasks, dict[str, torch.Tensor], int]:
    states = [draw(slot_states(slot_id)) for slot_id in ("r0c0", "r0c1", "r0c2")]
    masks = compute_masks(states, slot_config(3), L.LifecycleConfig(), draw(st.integers(0, 3)), epoch=1)
    logits = {
        head: torch.tensor(draw(st.lists(st.floats(-5, 5), min_size=n, max_size=n)))
        for head, n in head_sizes(3).items()
    }
    return masks, logits, draw(st.integers(0, 2**31 - 1))


@FAST
@given(inputs=decision_inputs(), deterministic=st.booleans())
def test_irrelevant_heads_are_canonical_with_log_prob_zero_and_update_scores_agree(
    inputs: tuple[L.ActionMasks, dict[str, torch.Tensor], int], deterministic: bool
) -> None:
    masks, logits, seed = inputs
    sampled = sample_action(logits, masks, deterministic=deterministic, generator=torch.Generator().manual_seed(seed))
    op = sampled.action["op"]
    assert masks.op[op]
    relevant = causal_heads(op)
    for head in SAMPLING_ORDER:
        if head in CANONICAL_VALUES and head not in relevant:
            # 12.3: one legal value after canonicalisation, so log-prob and entropy are exactly 0.
            assert sampled.action[head] == CANONICAL_VALUES[head]
            assert sampled.log_probs[head] == 0.0 and sampled.entropies[head] == 0.0
    if op == L.LifecycleOp.WAIT:
        assert sampled.action["slot"] == masks.slot_by_op[0].index(True) and sampled.log_probs["slot"] == 0.0
    else:
        assert masks.slot_by_op[op][sampled.action["slot"]]
    # 12.4 at one step: re-scoring the stored action under the masks re-derived from the stored op.
    rows = conditioned_masks(masks, op)
    scored, entropies = evaluate_actions(
        {head: values.unsqueeze(0) for head, values in logits.items()},
        {head: torch.tensor([row]) for head, row in rows.items()},
        {head: torch.tensor([value]) for head, value in sampled.action.items()},
    )
    for head in SAMPLING_ORDER:
        assert float(scored[head][0]) == sampled.log_probs[head]
        assert float(entropies[head][0]) == sampled.entropies[head]


def test_deterministic_mode_takes_the_most_likely_legal_value() -> None:
    states = [L.SlotState(slot_id=s) for s in ("r0c0", "r0c1", "r0c2")]
    masks = compute_masks(states, slot_config(3), L.LifecycleConfig(), 0, epoch=1)
    logits = {head: torch.zeros(n) for head, n in head_sizes(3).items()}
    logits["op"] = torch.tensor(
        [0.0, 3.0, 9.0, 0.0, 0.0, 0.0, 9.0, 9.0]
    )  # SET_ALPHA_TARGET, GROW, SHRINK: illegal here
    logits["blueprint"][L.BlueprintAction.CONV_HEAVY] = 4.0
    sampled = sample_action(logits, masks, deterministic=True)
    assert sampled.action["op"] == L.LifecycleOp.GERMINATE
    assert sampled.action["blueprint"] == L.BlueprintAction.CONV_HEAVY


@pytest.mark.parametrize("op", [L.LifecycleOp.GROW_INTERNAL, L.LifecycleOp.SHRINK_INTERNAL])
def test_an_internal_op_legal_in_one_slot_picks_that_slot_and_canonical_heads(op: L.LifecycleOp) -> None:
    """Invariant 33 of plans/kasmina2-phase0.md: only the op and the slot carry the decision."""
    ladder = L.SlotState(
        slot_id="r0c1",
        stage=L.SeedStage.HOLDING,
        seed_id="s",
        blueprint=L.BlueprintAction.CONV_LADDER,
        germinated_epoch=1,
        controller=L.AlphaControllerState(alpha=1.0, alpha_start=1.0, alpha_target=1.0),
        internal_kind=L.SeedInternalKind.CONV_LADDER,
        internal_level=2,
        internal_max_level=4,
    )
    states = [L.SlotState(slot_id="r0c0"), ladder, L.SlotState(slot_id="r0c2")]
    base = compute_masks(states, slot_config(3), L.LifecycleConfig(), 0, epoch=5)
    assert base.slot_by_op[op] == [False, True, False]
    only = [o == op for o in L.LifecycleOp]  # the op itself the only legal one
    masks = L.ActionMasks(
        **{**{h: getattr(base, h) for h in L.HEAD_NAMES if h != "slot"}, "op": only}, slot_by_op=base.slot_by_op
    )
    generator = torch.Generator().manual_seed(3)
    for _ in range(20):
        logits = {head: torch.randn(n, generator=generator) * 5 for head, n in head_sizes(3).items()}
        sampled = sample_action(logits, masks, generator=generator)
        assert sampled.action["op"] == op and sampled.action["slot"] == 1
        for head, value in CANONICAL_VALUES.items():
            assert sampled.action[head] == value and sampled.log_probs[head] == 0.0
