"""`esper`: the operator's entry point for everything (ARCHITECTURE.md §8)."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import importlib
import importlib.util
import json
import logging
import sys
from pathlib import Path
from typing import Any

from services.operator.registry import SERVICE_NAMES

#: Modules that add subcommands through `register(subparsers)`.
COMMAND_MODULES = (
    "services.operator.karn_commands",
    "services.operator.runs_commands",
    "services.experiments.commands",
    "services.operator.policy_commands",
    "services.tolaria.commands",
    "services.operator.bench",
)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def cmd_service(args: argparse.Namespace) -> int:
    from services.operator.registry import service_definition, service_settings
    from services.runtime.service import run_service

    definition = service_definition(args.name)
    overrides = {
        "nats_url": args.nats,
        "admin_port": args.admin_port,
        "device": args.device,
        "log_level": args.log_level,
    }
    return run_service(definition, service_settings(args.name, overrides))


def cmd_up(args: argparse.Namespace) -> int:
    from services.operator.up import default_state_dir, supervise, up

    state_dir = Path(args.state_dir).resolve() if args.state_dir else default_state_dir()
    try:
        if args.foreground:
            asyncio.run(supervise(state_dir, args.nats_port, args.secure))
            return 0
        url = up(state_dir, args.nats_port, secure=args.secure)
    except (RuntimeError, TimeoutError) as error:  # PortInUse included: a clear line, not a traceback
        print(f"esper: error: {error}", file=sys.stderr, flush=True)
        return 2
    print(url)
    print(f"export ESPER_NATS_URL={url}", file=sys.stderr)
    if args.secure:
        print(f"operator credentials: set -a; . {state_dir / 'cli.env'}; set +a", file=sys.stderr)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from services.operator.up import default_state_dir, down

    state_dir = Path(args.state_dir).resolve() if args.state_dir else default_state_dir()
    stopped = down(state_dir)
    print("esper: stopped" if stopped else "esper: nothing was running")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from services.operator.up import bus_url
    from services.runtime.bus import BusUnavailable, connect
    from services.runtime.discovery import live_services
    from services.runtime.settings import RuntimeSettings

    url = bus_url(args.nats)

    async def status() -> list[dict[str, Any]]:
        nc = await connect(RuntimeSettings.from_env({"service": "cli", "nats_url": url, "connect_timeout": 3.0}))
        try:
            return await live_services(nc, timeout=args.wait)
        finally:
            await nc.close()

    try:
        services = asyncio.run(status())
    except BusUnavailable as exc:
        if args.json:
            _print_json({"bus": url, "reachable": False, "services": [], "error": str(exc)})
        else:
            print(f"esper: {exc}", file=sys.stderr)
        return 1
    if args.json:
        _print_json({"bus": url, "reachable": True, "services": services})
        return 0
    print(f"bus {url}: {len(services)} service instance(s)")
    for svc in services:
        state = "ready" if svc["ready"] else "starting"
        print(
            f"  {svc['service']:<8} {state:<8} {svc['version']:<8} {svc['device']:<8} {svc['instance']}  {svc['admin']}"
        )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import os

    # An explicit bus (flag or ESPER_NATS_URL) is used as is; otherwise `esper run` brings its own.
    explicit = args.nats or os.environ.get("ESPER_NATS_URL") or None
    if args.detach and args.policy == "ppo":
        print("esper run: --detach submits one run; --policy ppo trains, so it follows", file=sys.stderr)
        return 2
    if args.policy == "ppo":
        from services.experiments.training import train_from_args

        logging.basicConfig(level=logging.WARNING)
        return train_from_args(args, explicit)
    from services.operator.run_client import run_from_args

    return run_from_args(args, explicit)


def cmd_schemas(args: argparse.Namespace) -> int:
    import leyline_schemas

    if args.action == "export":
        path = leyline_schemas.export_schema(Path(args.out) if args.out else leyline_schemas.SCHEMA_PATH)
        print(f"wrote {path}")
        return 0
    committed = leyline_schemas.SCHEMA_PATH.read_text() if leyline_schemas.SCHEMA_PATH.exists() else ""
    if committed != leyline_schemas.json_schema_text():
        print("leyline_schemas/schema.json is out of date: run `esper schemas export`", file=sys.stderr)
        return 1
    print("schema.json matches the code")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from services.tolaria.tasks import task_table

    if args.measure:
        from services.tolaria.headroom import measure_headroom

        seeds = tuple(range(1, args.seeds + 1))
        _print_json(measure_headroom(args.measure, seeds, args.epochs, args.max_batches).as_dict())
        return 0
    table = task_table()
    if args.json:
        _print_json(table)
    else:
        for row in table:
            print(
                f"{row['name']:<24} {row['topology']:<12} {row['host_params']:>10,}  slots {','.join(row['slot_ids'])}"
            )
    return 0


def cmd_kasmina(args: argparse.Namespace) -> int:
    import dataclasses

    from leyline_schemas import Topology
    from services.kasmina.mechanics.blueprints import blueprint_catalog

    catalog = [
        {**dataclasses.asdict(info), "topology": info.topology.value}
        for info in blueprint_catalog(Topology(args.topology), args.channels)
    ]
    if args.json:
        _print_json(catalog)
        return 0
    for row in catalog:
        ident = "identity at birth" if row["identity_at_birth"] else ""
        count, estimate = row["param_count"], row["param_estimate"]
        print(f"{row['index']:>2} {row['name']:<16} {count:>10,} params (estimate {estimate:>9,}) {ident}")
        levels = row["level_param_counts"]
        if levels:
            # A microstructured seed allocates every part at birth but runs (and is charged for) its level's.
            active = ", ".join(f"{level}: {n:,}" for level, n in enumerate(levels) if level > 0)
            print(f"{'':>19} active params by level ({active}); {row['active_param_count']:,} at birth")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="esper", description="Grow neural networks while they train.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("service", help="run one service in the foreground (what compose runs)")
    p.add_argument("name", choices=SERVICE_NAMES)
    p.add_argument("--nats", default=None, help="bus URL (default: ESPER_NATS_URL)")
    p.add_argument("--admin-port", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--log-level", default=None)
    p.add_argument("--max-envs", type=int, default=None, help="tolaria: the most envs this worker drives at once")
    p.set_defaults(func=cmd_service)

    p = sub.add_parser("up", help="start nats-server and the five services in the background")
    p.add_argument("--state-dir", default=None)
    p.add_argument("--nats-port", type=int, default=None)
    p.add_argument("--foreground", action="store_true", help="supervise in this terminal instead")
    p.add_argument("--secure", action="store_true", help="one NATS user per service with subject permissions")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("down", help="stop what `esper up` started")
    p.add_argument("--state-dir", default=None)
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("status", help="the live services, by $SRV discovery")
    p.add_argument("--nats", default=None)
    p.add_argument("--json", action="store_true")
    p.add_argument("--wait", type=float, default=0.5, help="seconds to collect discovery answers")
    p.set_defaults(func=cmd_status)

    from services.operator.run_client import add_run_arguments

    p = sub.add_parser("run", help="run a job end to end and write a report")
    add_run_arguments(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("schemas", help="the JSON Schema of every Leyline message")
    p.add_argument("action", choices=("export", "check"))
    p.add_argument("--out", default=None)
    p.set_defaults(func=cmd_schemas)

    p = sub.add_parser("tasks", help="the task registry")
    p.add_argument("--json", action="store_true")
    p.add_argument("--measure", metavar="TASK", default=None, help="measure headroom: host alone vs slots filled")
    p.add_argument("--seeds", type=int, default=3, help="with --measure: env seeds 1..N")
    p.add_argument("--epochs", type=int, default=None, help="with --measure: epochs (default: the task's)")
    p.add_argument("--max-batches", type=int, default=0, help="with --measure: batches per epoch, 0 = all")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("kasmina", help="Kasmina's mechanics library")
    ksub = p.add_subparsers(dest="kasmina_command", required=True)
    kb = ksub.add_parser("blueprints", help="the blueprint catalog")
    kb.add_argument("--topology", choices=("cnn", "transformer"), default="cnn")
    kb.add_argument("--channels", type=int, default=32)
    kb.add_argument("--json", action="store_true")
    kb.set_defaults(func=cmd_kasmina)

    for module_name in COMMAND_MODULES:
        # Each service's own operator commands live beside the service and register themselves here.
        if importlib.util.find_spec(module_name) is not None:
            importlib.import_module(module_name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # A crash in native code (torch, msgspec, sqlite) leaves every thread's Python stack in the log, not just a -11.
    faulthandler.enable()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
