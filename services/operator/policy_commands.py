"""Tamiyo's operator commands: `esper policy use` (repoint a line) and `esper policy list`."""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import sys
from typing import Any

from nats.aio.client import Client

from leyline_schemas import (
    ActivePolicy,
    LeylineDecodeError,
    PolicyListRequest,
    ServedPolicies,
    decode,
    encode,
    subjects,
    to_builtins,
)
from services.policy.pointers import fetch_object, learned_pointer, read_pointers, stored_versions, write_pointer
from services.runtime import jetstream


class PolicyCommandError(RuntimeError):
    """An operator request that cannot be carried out (unknown line, missing version, corrupt blob)."""


def _store_digest(blob: bytes) -> str:
    # The object store records "SHA-256=<urlsafe base64>" for every object it holds.
    return "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(blob).digest()).decode()


async def use_version(nc: Client, policy_id: str, version: int | None = None) -> ActivePolicy:
    """Point `policy_id` at a stored version (default: the newest), after checking its blob and digest."""
    js = nc.jetstream()
    store = await jetstream.weights_store(js)
    stored = (await stored_versions(store, policy_id)).get(policy_id, [])
    if not stored:
        raise PolicyCommandError(f"no stored versions of {policy_id!r} in {subjects.WEIGHTS_STORE}")
    chosen = max(stored) if version is None else version
    if chosen not in stored:
        raise PolicyCommandError(f"{policy_id} has no version {chosen}; stored versions: {stored}")
    name = subjects.weights_object(policy_id, chosen)
    blob = await fetch_object(store, name)
    if blob is None:
        raise PolicyCommandError(f"object {name} vanished from {subjects.WEIGHTS_STORE}")
    info = await store.get_info(name)
    if info.digest and info.digest != _store_digest(blob):
        raise PolicyCommandError(f"{name}: the store's digest {info.digest} does not match its bytes")
    # torch only here: every `esper` process (Karn's and Kasmina's services too) builds this module's parser.
    from services.policy.weights import PolicyBlobError, decode_policy

    try:
        weights = decode_policy(blob)
    except PolicyBlobError as exc:
        raise PolicyCommandError(f"{name} is not a loadable policy: {exc}") from exc
    if weights.version != chosen:
        raise PolicyCommandError(f"{name} holds version {weights.version}, not {chosen}")
    pointer = learned_pointer(policy_id, chosen, blob)
    await write_pointer(await jetstream.policies_bucket(js), pointer)
    return pointer


async def served_policies(nc: Client, wait: float = 0.5) -> list[ServedPolicies]:
    """Every Tamiyo instance's answer to a policy listing (each instance subscribes outside any queue group)."""
    answers: list[ServedPolicies] = []

    async def collect(msg: Any) -> None:
        try:
            answers.append(decode(msg.data, ServedPolicies))
        except LeylineDecodeError:
            return

    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=collect)
    await nc.publish(subjects.TAMIYO_POLICIES, encode(PolicyListRequest()), reply=inbox)
    await nc.flush()
    await asyncio.sleep(wait)
    await sub.unsubscribe()
    return sorted(answers, key=lambda a: a.instance)


async def list_policies(nc: Client, wait: float = 0.5) -> list[dict[str, Any]]:
    """Every policy id known to the bus: its pointer, stored versions, and the instances serving it (and how)."""
    js = nc.jetstream()
    pointers = {p.policy_id: p for p in await read_pointers(await jetstream.policies_bucket(js))}
    versions = await stored_versions(await jetstream.weights_store(js))
    served = await served_policies(nc, wait)
    ids = sorted(set(pointers) | set(versions) | {p.policy_id for answer in served for p in answer.policies})
    rows = []
    for policy_id in ids:
        pointer = pointers.get(policy_id)
        rows.append(
            {
                "policy_id": policy_id,
                "kind": pointer.kind.value if pointer else None,
                "version": pointer.version if pointer else None,
                "sha256": pointer.sha256 if pointer else None,
                "object_name": pointer.object_name if pointer else None,
                "stored_versions": versions.get(policy_id, []),
                "served_by": [
                    {"instance": answer.instance, **to_builtins(p)}
                    for answer in served
                    for p in answer.policies
                    if p.policy_id == policy_id
                ],
            }
        )
    return rows


def cmd_policy_use(args: argparse.Namespace) -> int:
    from services.operator.up import run_on_bus

    try:
        pointer = run_on_bus(args.nats, lambda nc: use_version(nc, args.policy_id, args.version))
    except PolicyCommandError as exc:
        print(f"esper policy use: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(to_builtins(pointer), indent=2, sort_keys=True))
    else:
        print(f"{pointer.policy_id} -> v{pointer.version} ({pointer.object_name}, sha256 {pointer.sha256[:16]}…)")
    return 0


def cmd_policy_list(args: argparse.Namespace) -> int:
    from services.operator.up import run_on_bus

    rows = run_on_bus(args.nats, lambda nc: list_policies(nc, args.wait))
    if args.json:
        print(json.dumps(rows, indent=2, sort_keys=True))
        return 0
    for row in rows:
        version = "-" if row["version"] is None else f"v{row['version']}"
        served = ", ".join(f"{s['instance']}@v{s['version']}" for s in row["served_by"]) or "not served"
        kind = row["kind"] or "builtin"
        print(f"{row['policy_id']:<24} {kind:<10} {version:<6} stored {row['stored_versions']}  {served}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("policy", help="policy lines: repoint a line, list lines and who serves them")
    psub = p.add_subparsers(dest="policy_command", required=True)
    use = psub.add_parser("use", help="point a policy id at a stored version (default: the newest)")
    use.add_argument("policy_id")
    use.add_argument("version", nargs="?", type=int, default=None)
    use.add_argument("--nats", default=None)
    use.add_argument("--json", action="store_true")
    use.set_defaults(func=cmd_policy_use)
    ls = psub.add_parser("list", help="policy ids, versions, digests, kinds and the Tamiyo instances serving them")
    ls.add_argument("--nats", default=None)
    ls.add_argument("--json", action="store_true")
    ls.add_argument("--wait", type=float, default=0.5, help="seconds to collect answers from Tamiyo instances")
    ls.set_defaults(func=cmd_policy_list)
