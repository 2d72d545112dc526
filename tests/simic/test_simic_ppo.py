"""PPO on real step records: rollout/update agreement (12.4), causal masks (12.6), forced steps (12.11), BPTT (12.10),
the KL stop and the finiteness gate (§5.14–5.15)."""

from __future__ import annotations

import dataclasses

import msgspec
import pytest
import torch

import leyline_schemas as L
from services.simic.episodes import score_episode
from services.simic.learner import ArmLearner
from services.simic.normalizers import ValueNormalizer
from services.simic.ppo import (
    PPOConfig,
    clipped_surrogate,
    entropy_floor_penalty,
    evaluate_sequences,
    ppo_update,
    stale_steps,
    weighted_value_loss,
)
from services.simic.reward_config import RewardConfig
from services.simic.rollout import build_rollout, collate
from tests.simic.simic_helpers import LENGTH, collate_rollouts, learner_config, play_round, run_spec


def _batch(learner: ArmLearner, round_index: int = 0):  # type: ignore[no-untyped-def]
    rollouts = [build_rollout(s, 2) for s in play_round(learner, round_index)]
    return collate_rollouts(learner, rollouts, LENGTH)


def test_update_pass_reproduces_the_rollout_log_probs_and_anchors_the_ratio_at_one() -> None:
    learner = ArmLearner.fresh(run_spec(n_envs=3), 0, learner_config())
    batch = _batch(learner)
    rows = torch.arange(batch.n_envs)
    with torch.no_grad():
        first = evaluate_sequences(learner.network, batch, rows, with_bootstrap=True)
        second = evaluate_sequences(learner.network, batch, rows)
    for head in L.HEAD_NAMES:
        acted = batch.acted
        assert torch.allclose(first.log_probs[head][acted], batch.rollout_log_probs[head][acted], atol=1e-5), head
        assert torch.equal(first.log_probs[head], second.log_probs[head])  # ratio at the anchor is exactly 1
    assert first.bootstrap_values is not None and bool(batch.bootstrap.all())


def test_irrelevant_heads_and_forced_steps_carry_no_policy_gradient() -> None:
    log_prob = torch.tensor([-0.5, -1.0, -0.2, -0.7], requires_grad=True)
    reference = torch.tensor([-0.6, -0.9, -0.3, -0.7])
    advantages = torch.tensor([1.0, -2.0, 0.5, 3.0])
    causal = torch.tensor([True, False, True, True])  # step 1: the effective op does not use this head
    acting = torch.tensor([True, True, False, True])  # step 2: forced (WAIT was the only legal op)
    loss, ratio, _ = clipped_surrogate(log_prob, reference, advantages, causal, acting, clip=0.2)
    loss.backward()
    assert log_prob.grad is not None
    assert float(log_prob.grad[1]) == 0.0 and float(log_prob.grad[2]) == 0.0
    assert float(log_prob.grad[0]) != 0.0 and float(log_prob.grad[3]) != 0.0
    assert float(ratio[0].detach()) == pytest.approx(torch.e**0.1)  # inside the clip range: it keeps its gradient
    forced = torch.tensor([False, True])
    weights = torch.where(forced, 0.2, 1.0)
    values, targets = torch.tensor([1.0, 1.0]), torch.tensor([0.0, 0.0])
    assert float(weighted_value_loss(values, targets, weights)) == pytest.approx(0.5 * (1.0 + 0.2) / 1.2)
    assert float(entropy_floor_penalty("op", torch.zeros(2), torch.zeros(2, dtype=torch.bool))) == 0.0
    assert float(entropy_floor_penalty("op", torch.zeros(2), torch.ones(2, dtype=torch.bool))) == pytest.approx(
        0.3 * 0.3**2
    )


def test_causal_masks_come_from_the_effective_op() -> None:
    learner = ArmLearner.fresh(run_spec(), 0, learner_config())
    records = play_round(learner, 0)[0].records
    germinate = L.FactoredAction(op=L.LifecycleOp.GERMINATE, slot=0, blueprint=L.BlueprintAction.CONV_LIGHT)
    first = records[0]
    invalid = msgspec.structs.replace(
        first,
        directive=msgspec.structs.replace(
            first.directive,
            raw_action=germinate,
            effective_op=L.LifecycleOp.WAIT,
            outcome=L.DecisionOutcome.INVALID_ACTION,
        ),
    )
    rollout = build_rollout(score_episode([invalid, *records[1:]], RewardConfig(mode=L.RewardMode.SHAPED)), 2)
    assert rollout.actions["op"][0] == L.LifecycleOp.GERMINATE
    assert rollout.masks["blueprint"][0].sum() > 1  # re-masked from the STORED op: blueprint is free under GERMINATE
    assert [h for h in L.HEAD_NAMES if rollout.causal[h][0]] == ["op"]  # credited as the WAIT it became
    assert bool(rollout.starts[0]) and not bool(rollout.starts[1:].any())


def test_bptt_constraints_are_construction_errors() -> None:
    with pytest.raises(ValueError, match="updates_per_batch"):
        PPOConfig(updates_per_batch=2)
    learner = ArmLearner.fresh(run_spec(), 0, learner_config())
    rollouts = [build_rollout(s, 2) for s in play_round(learner, 0)]
    with pytest.raises(ValueError, match="chunk_length"):
        collate(
            rollouts, [r.obs for r in rollouts], [r.bootstrap_obs for r in rollouts], [r.rewards for r in rollouts], 5
        )


def test_a_rollback_resets_the_hidden_state_and_makes_a_true_terminal() -> None:
    learner = ArmLearner.fresh(run_spec(), 0, learner_config())
    records = play_round(learner, 0)[0].records
    rollback = L.GovernorReport(reason="nan", loss_at_panic=None, loss_threshold=None)
    records[4] = msgspec.structs.replace(
        records[4], report=msgspec.structs.replace(records[4].report, governor=rollback)
    )
    scored = score_episode(records, RewardConfig(mode=L.RewardMode.SHAPED))
    rollout = build_rollout(scored, 2)
    assert rollout.starts.nonzero().flatten().tolist() == [0, 4]
    assert rollout.terminal.nonzero().flatten().tolist() == [3]
    assert rollout.rewritten[:4].all() and float(rollout.rewards[3]) == -10.0 and not rollout.rewritten[4:].any()
    assert rollout.bootstrap  # the episode still ends truncated


def test_kl_early_stop_and_the_finiteness_gate() -> None:
    learner = ArmLearner.fresh(run_spec(n_envs=4), 0, learner_config())
    batch = _batch(learner)
    stats = ppo_update(
        learner.network,
        torch.optim.Adam(learner.network.parameters(), lr=0.05),
        batch,
        PPOConfig(epochs=4, minibatches=4, target_kl=1e-9),
        ValueNormalizer(),
        updates_done=0,
        total_updates=2,
        generator=torch.Generator().manual_seed(0),
    )
    assert stats.early_stopped and 1 <= stats.optimizer_steps < 16
    broken = ArmLearner.fresh(run_spec(n_envs=2), 0, learner_config())
    healthy_batch = _batch(broken)
    with torch.no_grad():
        broken.network.value_head[-1].bias.fill_(float("nan"))
    stats = ppo_update(
        broken.network,
        broken.optimizer,
        healthy_batch,
        PPOConfig(epochs=1, minibatches=2),
        ValueNormalizer(),
        updates_done=0,
        total_updates=2,
        generator=torch.Generator().manual_seed(0),
    )
    assert stats.optimizer_steps == 0 and stats.skipped_steps == 2


def _one_step_update(learner: ArmLearner, batch, current_version: int):  # type: ignore[no-untyped-def]
    return ppo_update(
        learner.network,
        torch.optim.Adam(learner.network.parameters(), lr=1e-4),
        batch,
        PPOConfig(epochs=1, minibatches=1),
        ValueNormalizer(),
        updates_done=0,
        total_updates=2,
        generator=torch.Generator().manual_seed(0),
        current_version=current_version,
    )


def test_a_stale_steps_ratio_is_taken_against_its_behaviour_log_prob() -> None:
    """Importance correction under `--async`: a step acted by an older version is clipped against μ, the log-prob its
    record carries; a step of the current version against the anchor. The KL stop measures the anchor only."""
    learner = ArmLearner.fresh(run_spec(n_envs=3), 0, learner_config())
    batch = _batch(learner)  # acted by version 0
    # A behaviour policy that gave every stored action e^-1 of the probability the current weights give it.
    shifted = dataclasses.replace(
        batch, rollout_log_probs={head: lp - 1.0 for head, lp in batch.rollout_log_probs.items()}
    )
    acted = int(batch.acted.sum())

    fresh = _one_step_update(ArmLearner.fresh(run_spec(n_envs=3), 0, learner_config()), shifted, current_version=0)
    assert fresh.diagnostics["importance_corrected_steps"] == 0.0
    assert fresh.clip_fraction == 0.0, "a current-version step keeps the anchored ratio of exactly 1"

    stale = _one_step_update(ArmLearner.fresh(run_spec(n_envs=3), 0, learner_config()), shifted, current_version=1)
    assert stale.diagnostics["importance_corrected_steps"] == float(acted) > 0
    assert stale.clip_fraction == 1.0, "every stale step's ratio is π/μ = e, outside the clip range"
    assert stale.optimizer_steps == 1 and not stale.early_stopped, "the KL stop is measured from the anchor"
    stale_mask = stale_steps(shifted, 1)
    assert torch.equal(stale_mask, batch.acted) and not bool(stale_steps(shifted, 0).any())
