"""Simic: the learner (rewards, rollouts, PPO, policy publishing)."""
