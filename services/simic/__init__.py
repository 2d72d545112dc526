"""Simic: the learner. Scores episodes into rewards, builds rollouts, runs PPO on the policy library's network,
keeps the ack/round ledger of each arm, and publishes policy versions and checkpoints.

May import: leyline_schemas, services.runtime, the shared libraries (services.policy, services.observation).
No other service; the experiment drivers that use Simic live in services.experiments.
"""
