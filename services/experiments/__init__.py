"""The experiment drivers: training runs (`esper run --policy ppo`), the reward A/B, the reward-efficiency exam,
the TinyStories baseline, the learning bench and the in-process learning sandbox. One plan builder
(`training.replicate_plan`) gives every paired comparison the same seeds, data order and budget per cohort.

Tooling: may import any package; nothing but tooling imports it.
"""
