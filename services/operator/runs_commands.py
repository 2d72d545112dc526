"""`esper runs list | show RUN | stop RUN | resume RUN`: the runs on a bus and their control (the rules are in
services/tolaria/run_control.py; stop and resume go through Tolaria's endpoints, list and show read ESPER_RUNS)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from nats.aio.client import Client

from leyline_schemas import (
    EnvLease,
    RemoteError,
    RunAttachment,
    RunResumeRequest,
    RunSpec,
    RunStatus,
    RunStopRequest,
    routes,
    subjects,
    to_builtins,
)
from leyline_schemas.rounds import env_episodes
from services.operator.run_attachment import CLIENT_ID
from services.runtime import jetstream
from services.runtime.bus import request
from services.runtime.kv import bucket_keys, read_message
from services.tolaria import checkpoint_store, leases, run_control


async def run_rows(nc: Client) -> list[dict[str, Any]]:
    """One row per run in ESPER_RUNS, newest first: state, progress, who follows it."""
    kv = await jetstream.runs_bucket(nc.jetstream())
    keys = [key for key in await bucket_keys(kv) if key.startswith("run.")]
    rows = []
    for key in keys:
        spec = await read_message(kv, key, RunSpec)
        if spec is None:
            continue
        status = await read_message(kv, subjects.run_status_key(spec.run_id), RunStatus)
        attachment = await run_control.read_attachment(kv, spec.run_id)
        rows.append(_row(spec, status, attachment))
    return sorted(rows, key=lambda row: (-row["created_at"], row["run_id"]))


def _row(spec: RunSpec, status: RunStatus | None, attachment: RunAttachment | None) -> dict[str, Any]:
    return {
        "run_id": spec.run_id,
        "state": status.state.value if status else "unknown",
        "episodes_done": status.episodes_done if status else 0,
        "episodes": spec.episodes,
        "task": spec.task,
        "policies": [arm.policy_id for arm in spec.arms],
        "learn": spec.learn,
        "created_at": spec.created_at,
        "updated_at": status.updated_at if status else 0.0,
        "message": status.message if status else "",
        "followed_by": None
        if attachment is None
        else {"client": attachment.client_id, "alive": attachment.expires_at > time.time()},
    }


async def run_detail(nc: Client, run_id: str) -> dict[str, Any] | None:
    kv = await jetstream.runs_bucket(nc.jetstream())
    spec = await read_message(kv, subjects.run_key(run_id), RunSpec)
    if spec is None:
        return None
    status = await read_message(kv, subjects.run_status_key(run_id), RunStatus)
    attachment = await run_control.read_attachment(kv, run_id)
    checkpoints = await checkpoint_store.stored(await jetstream.hosts_store(nc.jetstream()), run_id, spec.n_envs)
    envs = []
    for env_id in range(spec.n_envs):
        lease = await read_message(kv, subjects.lease_key(run_id, env_id), EnvLease)
        live = lease is not None and leases.held_now(lease, time.time())
        envs.append(
            {
                "env_id": env_id,
                "episodes_done": lease.episodes_done if lease else 0,
                "episodes": len(env_episodes(spec, env_id)),
                "worker": lease.worker_id if live and lease else None,
                "episode": lease.episode if lease else -1,
                "attempt": lease.attempt if lease else 0,
                "checkpoint": checkpoints.get(env_id),
            }
        )
    return {**_row(spec, status, attachment), "envs": envs, "spec": to_builtins(spec)}


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp)) if timestamp else "-"


def _follower(row: dict[str, Any]) -> str:
    followed = row["followed_by"]
    if followed is None:
        return "detached"
    return str(followed["client"]) + ("" if followed["alive"] else " (gone)")


def cmd_runs_list(args: argparse.Namespace) -> int:
    from services.operator.up import run_on_bus

    rows = run_on_bus(args.nats, run_rows)
    if args.json:
        print(json.dumps(rows, indent=2, sort_keys=True))
        return 0
    if not rows:
        print("no runs on this bus")
    for row in rows:
        progress = f"{row['episodes_done']}/{row['episodes']}"
        line = f"{row['run_id']:<48} {row['state']:<10} {progress:>9}  {row['task']:<14} {_follower(row)}"
        print(line + (f"  {row['message']}" if row["message"] else ""))
    return 0


def cmd_runs_show(args: argparse.Namespace) -> int:
    from services.operator.up import run_on_bus

    detail = run_on_bus(args.nats, lambda nc: run_detail(nc, args.run_id))
    if detail is None:
        print(f"esper runs show: no run {args.run_id!r} on this bus", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(detail, indent=2, sort_keys=True))
        return 0
    print(f"{detail['run_id']}: {detail['state']}" + (f" ({detail['message']})" if detail["message"] else ""))
    print(f"  task {detail['task']}, policies {', '.join(detail['policies'])}, learn {detail['learn']}")
    print(f"  episodes {detail['episodes_done']}/{detail['episodes']}, followed by: {_follower(detail)}")
    print(f"  created {_when(detail['created_at'])}, updated {_when(detail['updated_at'])}")
    for env in detail["envs"]:
        where = f"episode {env['episode']} attempt {env['attempt']}" if env["episode"] >= 0 else "not started"
        held = f"held by {env['worker']}" if env["worker"] else "not leased"
        checkpoint = f", host checkpoint of {env['checkpoint']}" if env["checkpoint"] else ""
        print(f"  env {env['env_id']}: {env['episodes_done']}/{env['episodes']} episodes, {where}, {held}{checkpoint}")
    return 0


def _control(args: argparse.Namespace, work: Any, verb: str) -> int:
    from services.operator.up import run_on_bus

    try:
        status: RunStatus = run_on_bus(args.nats, work)
    except RemoteError as exc:
        print(f"esper runs {verb}: {exc.reply.message}", file=sys.stderr)
        return 1
    print(f"{status.run_id}: {status.state.value}" + (f" ({status.message})" if status.message else ""))
    return 0


def cmd_runs_stop(args: argparse.Namespace) -> int:
    reason = args.reason or f"stopped by {CLIENT_ID}"
    stop = RunStopRequest(run_id=args.run_id, reason=reason)
    return _control(args, lambda nc: request(nc, routes.RUNS_STOP, stop, timeout=10.0), "stop")


def cmd_runs_resume(args: argparse.Namespace) -> int:
    resume = RunResumeRequest(run_id=args.run_id, by=CLIENT_ID)
    return _control(args, lambda nc: request(nc, routes.RUNS_RESUME, resume, timeout=10.0), "resume")


def register(sub: Any) -> None:
    p = sub.add_parser("runs", help="the runs on the bus: list, show, stop, resume")
    rsub = p.add_subparsers(dest="runs_command", required=True)
    ls = rsub.add_parser("list", help="every run, newest first: state, episodes, who follows it")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_runs_list)
    show = rsub.add_parser("show", help="one run: its state, envs, leases and follower")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_runs_show)
    stop = rsub.add_parser("stop", help="stop a run: its workers abandon the epoch in progress and let go")
    stop.add_argument("run_id")
    stop.add_argument("--reason", default="")
    stop.set_defaults(func=cmd_runs_stop)
    resume = rsub.add_parser("resume", help="run a stopped or failed run again from the episodes it finished")
    resume.add_argument("run_id")
    resume.set_defaults(func=cmd_runs_resume)
    for command in (ls, show, stop, resume):
        command.add_argument("--nats", default=None)
