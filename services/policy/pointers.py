"""Policy lines on the bus: ActivePolicy pointers in KV ESPER_POLICIES and weight blobs in ESPER_WEIGHTS.

Thin helpers shared by Simic (publishing versions) and the `esper policy` commands (repointing, listing).
A version is always written blob first, pointer second, so a pointer never names a blob that is not there.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time

from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from leyline_schemas import ActivePolicy, PolicyKind, encode, subjects
from services.runtime.kv import bucket_keys, read_message

_VERSION = re.compile(r"^weights/(?P<policy>[^/]+)/(?P<version>\d+)\.safetensors$")


async def read_pointer(kv: KeyValue, policy_id: str) -> ActivePolicy | None:
    """The pointer of a line, or None when there is none (or it cannot be read as an ActivePolicy)."""
    return await read_message(kv, subjects.policy_key(policy_id), ActivePolicy)


async def read_pointers(kv: KeyValue) -> list[ActivePolicy]:
    pointers = []
    keys = await bucket_keys(kv)
    for key in sorted(keys):
        if key.startswith("policy."):
            pointer = await read_pointer(kv, key.removeprefix("policy."))
            if pointer is not None:
                pointers.append(pointer)
    return pointers


async def write_pointer(kv: KeyValue, active: ActivePolicy) -> int:
    return int(await kv.put(subjects.policy_key(active.policy_id), encode(active)))


async def fetch_object(store: ObjectStore, name: str) -> bytes | None:
    try:
        result = await store.get(name)
    except (NotFoundError, KeyNotFoundError):
        return None
    return bytes(result.data or b"")


def learned_pointer(policy_id: str, version: int, blob: bytes) -> ActivePolicy:
    return ActivePolicy(
        policy_id=policy_id,
        kind=PolicyKind.LEARNED,
        version=version,
        sha256=hashlib.sha256(blob).hexdigest(),
        object_name=subjects.weights_object(policy_id, version),
        updated_at=time.time(),
    )


async def put_weights(store: ObjectStore, policy_id: str, version: int, blob: bytes) -> ActivePolicy:
    """Store a version's blob and return the pointer that names it (not yet written)."""
    pointer = learned_pointer(policy_id, version, blob)
    await store.put(pointer.object_name, blob)
    return pointer


async def delete_weights(store: ObjectStore, policy_id: str, version: int) -> None:
    """Remove a version's blob (a version that is already gone is not an error)."""
    with contextlib.suppress(NotFoundError, KeyNotFoundError):
        await store.delete(subjects.weights_object(policy_id, version))


async def stored_versions(store: ObjectStore, policy_id: str | None = None) -> dict[str, list[int]]:
    """Versions with a blob in the weights store, per policy id."""
    try:
        infos = await store.list(ignore_deletes=True)
    except (NotFoundError, KeyNotFoundError):
        return {}
    versions: dict[str, list[int]] = {}
    for info in infos:
        match = _VERSION.match(info.name or "")
        if match and not info.deleted and (policy_id is None or match["policy"] == policy_id):
            versions.setdefault(match["policy"], []).append(int(match["version"]))
    return {pid: sorted(v) for pid, v in versions.items()}
