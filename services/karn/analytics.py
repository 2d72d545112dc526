"""Per-blueprint seed analytics and per-env seed scoreboards (reference/tolaria_karn.md §8.4)."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from leyline_schemas import BlueprintAction
from leyline_schemas.lifecycle import internal_spec

#: Relative compute cost of a fossilized seed of each blueprint (the reference's figures); others cost 1.1.
COMPUTE_MULTIPLIERS: dict[str, float] = {
    "noop": 1.0,
    "norm": 1.02,
    "depthwise": 1.08,
    "conv_light": 1.15,
    "conv_heavy": 1.25,
    "lora": 1.05,
    "attention": 1.35,
    "flex_attention": 1.35,
    "mlp": 1.20,
}
DEFAULT_MULTIPLIER = 1.1
#: A ladder's cost follows its level, (base, per level): a conv_ladder fossil at level k costs 1.05 + 0.10·k, i.e.
#: conv_light's 1.15 at k = 1 and conv_heavy's 1.25 at k = 2; at level 0 it is the identity and costs nothing
#: (plans/kasmina2-phase0.md §6.4 item 4).
LEVEL_MULTIPLIERS: dict[str, tuple[float, float]] = {"conv_ladder": (1.05, 0.10)}

TERMINAL = ("FOSSILIZED", "PRUNED")


def compute_multiplier(blueprint: str, internal_level: int | None = None) -> float:
    """A fossil's relative compute cost; a ladder's at `internal_level` (None: the level it germinates at)."""
    if blueprint not in LEVEL_MULTIPLIERS:
        return COMPUTE_MULTIPLIERS.get(blueprint, DEFAULT_MULTIPLIER)
    if internal_level is None:
        internal_level = internal_spec(BlueprintAction[blueprint.upper()]).initial_level
    base, per_level = LEVEL_MULTIPLIERS[blueprint]
    return 1.0 if internal_level == 0 else round(base + per_level * internal_level, 6)


@dataclass(frozen=True)
class SeedLife:
    """What the store knows about one seed: where it lived, how it ended, and what it was worth."""

    env_id: int
    episode: int
    seed_id: str
    slot_id: str
    blueprint: str
    stage: str
    params: int = 0
    improvement: float | None = None
    counterfactual: float | None = None
    blending_delta: float | None = None
    epochs_total: int = 0
    internal_level: int = 0

    @property
    def compute_multiplier(self) -> float:
        return compute_multiplier(self.blueprint, self.internal_level)


@dataclass(frozen=True)
class BlueprintStats:
    """Germinated/fossilized/pruned counts and the mean accuracy effects of one blueprint."""

    blueprint: str
    germinated: int
    fossilized: int
    pruned: int
    live: int
    mean_accuracy_delta: float | None
    mean_churn: float | None
    mean_blending_delta: float | None
    mean_counterfactual: float | None
    fossilization_rate: float | None
    compute_multiplier: float


@dataclass(frozen=True)
class SeedScoreboard:
    """Cumulative seed counts of one env with the compute cost its fossilized seeds add."""

    env_id: int
    germinated: int
    fossilized: int
    pruned: int
    params_added: int
    compute_cost: float
    fossilized_by_blueprint: dict[str, int]
    mean_fossilize_age: float | None
    mean_prune_age: float | None


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def blueprint_stats(seeds: Iterable[SeedLife]) -> list[BlueprintStats]:
    """One row per blueprint seen: fossilization rate in percent of terminal seeds, deltas in accuracy points."""
    by_blueprint: dict[str, list[SeedLife]] = defaultdict(list)
    for seed in seeds:
        by_blueprint[seed.blueprint].append(seed)
    rows = []
    for blueprint in sorted(by_blueprint):
        group = by_blueprint[blueprint]
        fossilized = [s for s in group if s.stage == "FOSSILIZED"]
        pruned = [s for s in group if s.stage == "PRUNED"]
        terminal = len(fossilized) + len(pruned)
        # A ladder's fossils differ by level: the blueprint's figure is the mean of what they cost.
        multiplier = _mean([s.compute_multiplier for s in fossilized])
        rows.append(
            BlueprintStats(
                blueprint=blueprint,
                germinated=len(group),
                fossilized=len(fossilized),
                pruned=len(pruned),
                live=len(group) - terminal,
                mean_accuracy_delta=_mean([s.improvement for s in fossilized if s.improvement is not None]),
                mean_churn=_mean([s.improvement for s in pruned if s.improvement is not None]),
                mean_blending_delta=_mean([s.blending_delta for s in group if s.blending_delta is not None]),
                mean_counterfactual=_mean(
                    [s.counterfactual for s in group if s.stage in TERMINAL and s.counterfactual is not None]
                ),
                fossilization_rate=100.0 * len(fossilized) / terminal if terminal else None,
                compute_multiplier=compute_multiplier(blueprint) if multiplier is None else multiplier,
            )
        )
    return rows


def seed_scoreboards(seeds: Iterable[SeedLife]) -> list[SeedScoreboard]:
    """One scoreboard per env, over every episode of the run."""
    by_env: dict[int, list[SeedLife]] = defaultdict(list)
    for seed in seeds:
        by_env[seed.env_id].append(seed)
    boards = []
    for env_id in sorted(by_env):
        group = by_env[env_id]
        fossilized = [s for s in group if s.stage == "FOSSILIZED"]
        pruned = [s for s in group if s.stage == "PRUNED"]
        by_blueprint = Counter(s.blueprint for s in fossilized)
        boards.append(
            SeedScoreboard(
                env_id=env_id,
                germinated=len(group),
                fossilized=len(fossilized),
                pruned=len(pruned),
                params_added=sum(s.params for s in fossilized),
                compute_cost=1.0 + sum(s.compute_multiplier - 1.0 for s in fossilized),
                fossilized_by_blueprint=dict(sorted(by_blueprint.items())),
                mean_fossilize_age=_mean([float(s.epochs_total) for s in fossilized]),
                mean_prune_age=_mean([float(s.epochs_total) for s in pruned]),
            )
        )
    return boards
