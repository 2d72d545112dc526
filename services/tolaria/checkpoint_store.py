"""Host checkpoints on the bus: one object per env of a run in ESPER_HOSTS, replaced by each write.

Garbage collection follows the episode: an env's checkpoint is removed once its episode is recorded done, and a
completed run's are all removed with it. A stopped or failed run keeps one per interrupted env, which
`esper runs resume` goes on from. A put replaces the object only once its last chunk is stored, so a worker that
dies mid-write leaves the previous checkpoint whole.

Checkpoints are an optimisation of recovery, never a condition of it: a write that fails, or one that cannot be
read back, costs at most the epochs since the previous one (the episode runs from its start when there is none).
Each such case is logged and counted, and the episode goes on.
"""

from __future__ import annotations

import contextlib
import logging

from nats.js.api import ObjectMeta
from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.object_store import ObjectStore

from leyline_schemas import subjects
from services.runtime.bus import BUS_ERRORS

log = logging.getLogger("esper.tolaria.checkpoints")

#: Object names of a run's checkpoints end in `env-<id>.pt`; its description is "episode E epoch K".
DESCRIPTION = "episode {episode} epoch {epoch}"


async def save(store: ObjectStore, run_id: str, env_id: int, episode: int, epoch: int, blob: bytes) -> bool:
    """Store the env's checkpoint, replacing the previous one; False (logged) when the bus refused it."""
    name = subjects.host_checkpoint_object(run_id, env_id)
    try:
        await store.put(
            name, blob, meta=ObjectMeta(name=name, description=DESCRIPTION.format(episode=episode, epoch=epoch))
        )
    except BUS_ERRORS as exc:
        log.warning("%s: checkpoint of epoch %d not stored (%s: %s)", name, epoch, type(exc).__name__, exc)
        return False
    return True


async def load(store: ObjectStore, run_id: str, env_id: int) -> bytes | None:
    """The env's checkpoint, or None when it has none (or it cannot be read now: the episode starts over)."""
    name = subjects.host_checkpoint_object(run_id, env_id)
    try:
        result = await store.get(name)
    except (NotFoundError, KeyNotFoundError):
        return None
    except BUS_ERRORS as exc:
        log.warning("%s: checkpoint not readable (%s: %s)", name, type(exc).__name__, exc)
        return None
    return bytes(result.data or b"")


async def discard(store: ObjectStore, run_id: str, env_id: int) -> None:
    """Remove the env's checkpoint; one that is already gone, or a bus that fails now, is not an error (the next
    episode's first checkpoint replaces it, and an episode never restores another episode's)."""
    name = subjects.host_checkpoint_object(run_id, env_id)
    with contextlib.suppress(NotFoundError, KeyNotFoundError, *BUS_ERRORS):
        await store.delete(name)


async def discard_run(store: ObjectStore, run_id: str, n_envs: int) -> None:
    for env_id in range(n_envs):
        await discard(store, run_id, env_id)


async def stored(store: ObjectStore, run_id: str, n_envs: int) -> dict[int, str]:
    """env id → "episode E epoch K" for each env of the run that has a checkpoint now (for `esper runs show`)."""
    found: dict[int, str] = {}
    for env_id in range(n_envs):
        with contextlib.suppress(NotFoundError, KeyNotFoundError):
            info = await store.get_info(subjects.host_checkpoint_object(run_id, env_id))
            if not info.deleted:
                found[env_id] = info.description or ""
    return found
