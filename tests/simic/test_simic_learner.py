"""ArmLearner: round membership, versions, replays, staleness, and checkpoints that resume exactly."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load as load_tensors

from leyline_schemas.rounds import arm_index_of_env, round_episodes
from services.simic.learner import ArmLearner
from tests.simic.simic_helpers import learner_config, play_round, run_spec


def test_envs_belong_to_arms_and_episodes_to_rounds() -> None:
    spec = run_spec(n_envs=4, rounds=2, arms=2)
    assert [arm_index_of_env(spec, env) for env in range(4)] == [0, 1, 0, 1]
    assert round_episodes(spec, 0, 0) == {0, 2} and round_episodes(spec, 1, 1) == {5, 7}


def test_arms_start_from_different_weights_and_a_line_from_the_same() -> None:
    spec = run_spec(arms=2)
    first, second = (ArmLearner.fresh(spec, i, learner_config()) for i in (0, 1))
    again = ArmLearner.fresh(spec, 0, learner_config())
    weights = [dict(learner.network.state_dict()) for learner in (first, second, again)]
    assert not torch.equal(weights[0]["feature_net.0.weight"], weights[1]["feature_net.0.weight"])
    assert torch.equal(weights[0]["feature_net.0.weight"], weights[2]["feature_net.0.weight"])
    assert first.optimizer is not second.optimizer and first.obs_normalizer is not second.obs_normalizer


def test_rounds_advance_versions_and_replays_of_applied_rounds_are_refused() -> None:
    learner = ArmLearner.fresh(run_spec(n_envs=2, rounds=2), 0, learner_config())
    episodes = play_round(learner, 0)
    assert learner.accept(episodes[0]) and not learner.ready()
    assert learner.accept(episodes[0])  # a redelivered copy adds nothing
    assert learner.accept(episodes[1]) and learner.ready()
    update = learner.update()
    assert (update.version, update.steps, update.episodes, learner.version) == (1, 24, 2, 1)
    assert update.lag_mean == 0.0 and not update.skipped and update.stats.optimizer_steps > 0
    assert not learner.accept(episodes[0])  # already inside an applied update
    assert learner.obs_normalizer.count == 24  # the round's raw states were folded in once
    with pytest.raises(ValueError, match="not one of arm"):
        ArmLearner.fresh(run_spec(n_envs=2, arms=2), 1, learner_config()).accept(episodes[0])


def test_episodes_older_than_the_lag_limit_are_consumed_but_not_trained_on() -> None:
    learner = ArmLearner.fresh(run_spec(n_envs=2, rounds=2), 0, learner_config())
    learner.accept(play_round(learner, 0)[0])
    learner.accept_untrainable(1)
    first = learner.update()
    assert first.episodes == 1 and first.steps == 12
    stale = play_round(learner, 1, version=-5)  # acted by a version far behind the learner's current one
    for scored in stale:
        learner.accept(scored)
    update = learner.update()
    assert update.stale_episodes == 2 and update.skipped and update.lag_max == 6 and learner.version == 2


def test_a_restored_checkpoint_resumes_exactly_where_the_learner_stopped() -> None:
    spec = run_spec(n_envs=2, rounds=3)
    learner = ArmLearner.fresh(spec, 0, learner_config())
    for scored in play_round(learner, 0):
        learner.accept(scored)
    learner.update()
    blob = learner.checkpoint(note="hello")
    restored = ArmLearner.restore(spec, 0, learner_config(), blob)
    assert restored.version == learner.version == 1 and restored.note == "hello"
    assert restored.reward_normalizer.count == learner.reward_normalizer.count
    assert restored.value_normalizer.var == learner.value_normalizer.var
    next_round = play_round(learner, 1)
    for a in (learner, restored):
        for scored in next_round:
            a.accept(scored)
    original, replayed = learner.update(), restored.update()
    # Same network, optimiser moments and normalisers: the replayed update is bit for bit the original one (the
    # blobs' digests may still differ, as safetensors does not order its metadata deterministically).
    first, second = load_tensors(original.blob), load_tensors(replayed.blob)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    with pytest.raises(ValueError, match="checkpoint of"):
        ArmLearner.restore(run_spec(n_envs=2, rounds=3, arms=2), 1, learner_config(), blob)
