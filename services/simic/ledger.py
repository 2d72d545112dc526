"""Simic's step ledger: which step records it holds, which rounds of each arm are in, and when a record may be acked.

The rule it keeps is ARCHITECTURE.md §2.3: a step record is acknowledged only once it is inside an applied update
recorded in a checkpoint, or once no update will ever need it (a run that does not learn, an arm whose line is
finished, a round already applied before a restart). Pure bookkeeping, generic in the message type: the bus adapter
acks what the ledger hands back and the learner trains; neither decides when.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from leyline_schemas import RunSpec, StepRecord, rounds
from services.simic.episodes import EpisodeBuffer, EpisodeKey

M = TypeVar("M")
ArmKey = tuple[str, str]  # (run id, arm id)
UNTRAINED = -1  # the round of an episode that no update consumes


@dataclass(frozen=True)
class Arrival(Generic[M]):
    """What one step record's arrival asks of the adapter: acks to send now, and an episode that became whole."""

    ack: list[M]
    episode: EpisodeBuffer | None  # whole at last, out of the buffers: score it, then hand it on or settle it
    duplicate: bool  # a copy kept for its ack only (a redelivery, or a record of an earlier attempt)
    superseded: int  # records of an earlier attempt that this arrival dropped


@dataclass
class ArmRounds(Generic[M]):
    """One learning arm's rounds since its last commit: the episodes in and the messages held, per round."""

    spec: RunSpec
    arm_index: int
    committed: int  # rounds inside committed updates; the next round to train
    episodes: dict[int, set[int]] = field(default_factory=dict)
    held: dict[int, list[M]] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.committed >= rounds.total_rounds(self.spec)

    def ready(self) -> bool:
        """Whether every episode of the next round to train is in (the same test as ArmLearner.ready)."""
        if self.finished:
            return False
        expected = rounds.round_episodes(self.spec, self.arm_index, self.committed)
        return bool(expected) and expected <= self.episodes.get(self.committed, set())


class StepLedger(Generic[M]):
    """Every step record between its delivery and its ack, for all runs and arms one Simic process serves."""

    def __init__(self) -> None:
        self.buffers: dict[EpisodeKey, EpisodeBuffer] = {}
        self.consumed: dict[EpisodeKey, tuple[str, int]] = {}  # episode → (arm id, round) it was handed on to
        self.arms: dict[ArmKey, ArmRounds[M]] = {}
        self.finished: set[ArmKey] = set()

    # ------------------------------------------------------------------ arms

    def open_arm(self, spec: RunSpec, arm_index: int, rounds_done: int) -> ArmKey:
        """Start keeping an arm whose learner has `rounds_done` rounds in its checkpoint (0 for a new line)."""
        key = (spec.run_id, spec.arms[arm_index].arm_id)
        if key in self.arms or key in self.finished:
            raise RuntimeError(f"arm {key} is opened once per process")
        self.arms[key] = ArmRounds(spec, arm_index, rounds_done)
        return key

    def is_open(self, arm: ArmKey) -> bool:
        return arm in self.arms

    def is_finished(self, arm: ArmKey) -> bool:
        return arm in self.finished

    def committed(self, arm: ArmKey) -> int:
        return self.arms[arm].committed

    # ------------------------------------------------------------------ steps and episodes

    def receive(self, record: StepRecord, message: M) -> Arrival[M]:
        """Buffer a delivered record until its episode is whole; a copy of a handed-on episode is settled with it."""
        key = (record.run_id, record.env_id, record.episode)
        if key in self.consumed:
            return Arrival(self._settle(key, [message]), None, duplicate=True, superseded=0)
        buffer = self.buffers.setdefault(key, EpisodeBuffer(key))
        before = buffer.superseded
        kept = buffer.add(record, message)
        whole = self.buffers.pop(key) if buffer.complete else None
        return Arrival([], whole, duplicate=not kept, superseded=buffer.superseded - before)

    def settle_untrained(self, episode: EpisodeKey, messages: list[M], arm_id: str = "") -> list[M]:
        """An episode no update consumes (its run does not learn, or its arm is finished): ack it and its copies."""
        self.consumed[episode] = (arm_id, UNTRAINED)
        return self._settle(episode, messages)

    def hand_on(self, episode: EpisodeKey, arm: ArmKey, messages: list[M]) -> list[M]:
        """An episode its arm's learner has taken (or refused as already applied): hold it until its round commits."""
        rounds_of = self.arms.get(arm)
        if rounds_of is None:
            raise RuntimeError(f"episode {episode} handed on to arm {arm}, which is not open")
        round_index = rounds.round_of_episode(rounds_of.spec, episode[2])
        self.consumed[episode] = (arm[1], round_index)
        if round_index >= rounds_of.committed:
            rounds_of.episodes.setdefault(round_index, set()).add(episode[2])
        return self._settle(episode, messages)

    def _settle(self, episode: EpisodeKey, messages: list[M]) -> list[M]:
        """Hold `messages` with their episode's round while that round is not committed; else they are ackable."""
        arm_id, round_index = self.consumed[episode]
        rounds_of = self.arms.get((episode[0], arm_id))
        if rounds_of is not None and round_index >= rounds_of.committed:
            rounds_of.held.setdefault(round_index, []).extend(messages)
            return []
        return list(messages)

    # ------------------------------------------------------------------ rounds

    def ready(self, arm: ArmKey) -> bool:
        """Whether the arm's next round is complete and may be trained."""
        rounds_of = self.arms.get(arm)
        return rounds_of is not None and rounds_of.ready()

    def commit(self, arm: ArmKey, round_index: int) -> list[M]:
        """The update of `round_index` is committed (checkpoint and pointer written): its records may be acked now."""
        rounds_of = self.arms[arm]
        if round_index != rounds_of.committed or not rounds_of.ready():
            raise RuntimeError(f"arm {arm} commits round {round_index}, but round {rounds_of.committed} is next")
        rounds_of.committed += 1
        rounds_of.episodes.pop(round_index, None)
        return rounds_of.held.pop(round_index, [])

    def close_if_finished(self, arm: ArmKey) -> bool:
        """Stop keeping an arm whose last round is committed; later copies of its episodes are acked as they come.

        Anything still held then (records of a round past the run's last) is left to redelivery, which settles it.
        """
        rounds_of = self.arms.get(arm)
        if rounds_of is None or not rounds_of.finished:
            return False
        del self.arms[arm]
        self.finished.add(arm)
        return True

    # ------------------------------------------------------------------ liveness

    def held(self) -> list[M]:
        """Every message delivered and not yet ackable: buffered steps and the records of uncommitted rounds."""
        messages: list[M] = [m for buffer in self.buffers.values() for m in buffer.messages]
        messages += [m for rounds_of in self.arms.values() for held in rounds_of.held.values() for m in held]
        return messages
