"""The epoch commit barrier across envs (reference/tolaria_karn.md §8.6).

Each env's EpochCompleted is buffered by (round, epoch); the epoch is committed as one snapshot once every
env expected in that round has reported, averaging over envs (optional metrics only over the measured ones).
A round that ends with envs missing is flushed as a partial snapshot.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class EnvEpoch:
    """One env's metrics at the end of one epoch; None means not measured."""

    env_id: int
    val_accuracy: float
    val_loss: float
    train_accuracy: float | None = None
    train_loss: float | None = None


@dataclass(frozen=True)
class CommittedEpoch:
    """The snapshot of one epoch of one round over all its envs."""

    round: int
    epoch: int
    n_expected: int
    n_reported: int
    val_accuracy: float
    val_loss: float
    train_accuracy: float | None
    train_loss: float | None

    @property
    def partial(self) -> bool:
        return self.n_reported < self.n_expected


def _mean(values: Iterable[float | None]) -> float | None:
    measured = [v for v in values if v is not None]
    return statistics.fmean(measured) if measured else None


class EpochBarrier:
    """Buffers per-env epochs and commits each (round, epoch) exactly once.

    `envs_in_round(r)` says how many envs report in round r; None while the run's shape is unknown,
    in which case epochs wait for a flush.
    """

    def __init__(self, envs_in_round: Callable[[int], int | None]) -> None:
        self._envs_in_round = envs_in_round
        self._pending: dict[tuple[int, int], dict[int, EnvEpoch]] = {}
        self._committed: set[tuple[int, int]] = set()
        self._latest_round: dict[int, int] = {}

    def add(self, round_index: int, epoch: int, report: EnvEpoch) -> list[CommittedEpoch]:
        """Buffer one env's epoch (a repeat replaces the earlier copy) and return what this commits.

        That is the epoch itself once every env of its round has reported, and the partial leftovers of
        earlier rounds that every one of their envs has since left (nothing more can arrive for them).
        """
        self._latest_round[report.env_id] = max(round_index, self._latest_round.get(report.env_id, round_index))
        committed = self._flush_abandoned()
        key = (round_index, epoch)
        if key in self._committed:
            return committed
        buffered = self._pending.setdefault(key, {})
        buffered[report.env_id] = report
        expected = self._envs_in_round(round_index)
        if expected is not None and len(buffered) >= expected:
            committed.append(self._commit(key, expected))
        return committed

    def _flush_abandoned(self) -> list[CommittedEpoch]:
        committed = []
        for round_index in self.pending_rounds():
            expected = self._envs_in_round(round_index)
            if expected is None:
                continue
            if all(self._latest_round.get(env, -1) > round_index for env in range(expected)):
                committed.extend(self.flush(round_index))
        return committed

    def flush(self, round_index: int | None = None) -> list[CommittedEpoch]:
        """Commit what is buffered for one round (or every round), partial or not, in (round, epoch) order."""
        keys = sorted(k for k in self._pending if round_index is None or k[0] == round_index)
        committed = []
        for key in keys:
            expected = self._envs_in_round(key[0])
            committed.append(self._commit(key, expected if expected is not None else len(self._pending[key])))
        return committed

    def pending_rounds(self) -> list[int]:
        return sorted({r for r, _ in self._pending})

    def is_committed(self, round_index: int, epoch: int) -> bool:
        return (round_index, epoch) in self._committed

    def mark_committed(self, round_index: int, epoch: int) -> None:
        """Remember an epoch committed before a restart, so a late report never re-opens it."""
        self._pending.pop((round_index, epoch), None)
        self._committed.add((round_index, epoch))

    def _commit(self, key: tuple[int, int], expected: int) -> CommittedEpoch:
        reports = list(self._pending.pop(key).values())
        self._committed.add(key)
        val_accuracy = _mean(r.val_accuracy for r in reports)
        val_loss = _mean(r.val_loss for r in reports)
        assert val_accuracy is not None and val_loss is not None, "a committed epoch has at least one report"
        return CommittedEpoch(
            round=key[0],
            epoch=key[1],
            n_expected=expected,
            n_reported=len(reports),
            val_accuracy=val_accuracy,
            val_loss=val_loss,
            train_accuracy=_mean(r.train_accuracy for r in reports),
            train_loss=_mean(r.train_loss for r in reports),
        )


def envs_in_round(n_envs: int, episodes: int, round_index: int) -> int:
    """Round r holds episodes r·n_envs … (r+1)·n_envs − 1 that exist (the last round may be short)."""
    if n_envs <= 0:
        raise ValueError(f"a run has at least one env, got n_envs={n_envs}")
    return max(0, min(n_envs, episodes - round_index * n_envs))
