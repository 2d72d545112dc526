"""A restarted episode (a new attempt) replaces what Simic buffered of the earlier attempt; nothing is spliced."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

import leyline_schemas as L
from services.simic.episodes import EpisodeBuffer
from services.tolaria.leases import episode_attempt
from tests.karn.karn_fixtures import script

EPISODE = [item for item in script("run-attempts", n_envs=1, episodes=1).items if isinstance(item, L.StepRecord)]


def _attempt(attempt: int) -> list[L.StepRecord]:
    return [msgspec.structs.replace(r, attempt=attempt, worker_id=f"w{attempt}") for r in EPISODE]


@settings(max_examples=60, deadline=None)
@given(
    cut=st.integers(0, len(EPISODE) - 1),
    late=st.lists(st.integers(0, len(EPISODE) - 1), max_size=5),
    redelivered=st.lists(st.integers(0, len(EPISODE) - 1), max_size=5),
)
def test_the_latest_attempt_is_what_gets_scored(cut: int, late: list[int], redelivered: list[int]) -> None:
    """Attempt 0 dies after `cut` steps; attempt 1 runs the whole episode; stale and repeated copies interleave."""
    first, second = _attempt(0), _attempt(1)
    buffer = EpisodeBuffer(("run-attempts", 0, 0))
    arrivals = [*first[:cut], *[second[i] for i in redelivered], *second, *[first[i] for i in late]]
    for index, record in enumerate(arrivals):
        buffer.add(record, index)
    assert buffer.complete
    assert [(r.attempt, r.step) for r in buffer.ordered()] == [(1, r.step) for r in EPISODE]
    assert buffer.messages == list(range(len(arrivals))), "every message is held for its ack"
    assert buffer.superseded == cut


def test_an_episode_found_in_progress_on_its_lease_is_a_restart() -> None:
    lease = L.EnvLease(run_id="r", env_id=0, worker_id="w", expires_at=0.0)
    assert episode_attempt(lease, 0) == 0, "a fresh lease starts attempt 0"
    started = msgspec.structs.replace(lease, episode=4, attempt=0)
    assert episode_attempt(started, 4) == 1, "episode 4 was in progress when the lease changed hands"
    assert episode_attempt(msgspec.structs.replace(started, attempt=1), 4) == 2
    assert episode_attempt(started, 6) == 0, "the next episode starts over at 0"


def test_the_dedup_id_tells_attempts_apart() -> None:
    first, second = _attempt(0)[0], _attempt(1)[0]
    assert first.dedup_id != second.dedup_id
    assert first.dedup_id == f"run-attempts/0/0/0/{first.step}"
