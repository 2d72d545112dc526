"""`esper karn …`: the Sanctum TUI (live or replayed), the HTTP API, export of a run, rebuild of the store."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path


def _store_path(explicit: str | None) -> Path:
    from services.karn.service import default_store_path

    return Path(explicit).expanduser().resolve() if explicit else default_store_path()


def cmd_sanctum(args: argparse.Namespace) -> int:
    from services.karn.feeds import Feed, LiveFeed, StoreFeed
    from services.karn.sanctum.app import SanctumApp

    feed: Feed
    if args.store and not args.nats:
        feed = StoreFeed(_store_path(args.store), args.run)
    else:
        from services.operator.up import bus_url

        feed = LiveFeed(bus_url(args.nats), args.run)
    SanctumApp(feed).run()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from services.karn.api import create_app
    from services.karn.schema import StoreSchemaError
    from services.karn.store import RunStore

    path = _store_path(args.store)
    try:
        RunStore.open(path).close()
    except StoreSchemaError as exc:
        print(f"esper karn serve: {exc}", file=sys.stderr)
        return 2
    from services.operator.up import bus_url

    nats_url = bus_url(args.nats) if args.nats else None
    reports = Path(args.reports).expanduser().resolve() if args.reports else None
    if reports is not None and not reports.is_dir():
        print(f"esper karn serve: --reports {reports} is not a directory", file=sys.stderr)
        return 2
    print(
        f"esper karn: Overwatch on http://{args.host}:{args.port}/ (API, OpenAPI at /docs), store {path}"
        + (f", reports {reports}" if reports else ""),
        file=sys.stderr,
    )
    uvicorn.run(create_app(path, nats_url, reports_dir=reports), host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from services.karn.export import export_run
    from services.karn.queries import UnknownRun
    from services.karn.schema import StoreSchemaError
    from services.karn.store import RunStore

    path = _store_path(args.store)
    if not path.exists():
        print(f"esper karn export: no run store at {path}", file=sys.stderr)
        return 2
    try:
        with RunStore.open(path) as store:
            print(export_run(store, args.run, args.format, Path(args.out)))
    except (UnknownRun, StoreSchemaError) as exc:
        print(f"esper karn export: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    from services.karn.rebuild import rebuild
    from services.operator.up import bus_url
    from services.runtime.bus import BusUnavailable

    path = _store_path(args.store)
    url = bus_url(args.nats)
    print(f"esper karn: rebuilding {path} from the streams on {url}", file=sys.stderr)
    try:
        report = asyncio.run(rebuild(url, path))
    except BusUnavailable as exc:
        print(f"esper karn rebuild: {exc}", file=sys.stderr)
        return 1
    for stream, count in report.messages.items():
        print(
            f"{stream}: {count} messages, {report.stored[stream]} stored, "
            f"{report.undecodable[stream]} undecodable (skipped)"
        )
    print(f"{report.runs} run(s) in {report.store_path}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `karn` (the TUI) and its `serve`, `export` and `rebuild` subcommands to the `esper` parser."""
    p = subparsers.add_parser(
        "karn",
        help="Sanctum TUI attached to a live run, or replayed from the run store; serve, export, rebuild",
        description="Without a subcommand: the Sanctum TUI. Live from --nats (default: ESPER_NATS_URL or the bus "
        "`esper up` started); replayed from the run store with --store and no --nats.",
    )
    p.add_argument("--nats", default=None, help="bus URL to attach to (live)")
    p.add_argument("--run", default=None, help="run id (default: the newest running run, or the latest stored)")
    p.add_argument("--store", default=None, help="run store file to replay from (default: ESPER_STORE_PATH)")
    p.set_defaults(func=cmd_sanctum)
    sub = p.add_subparsers(dest="karn_command")

    s = sub.add_parser("serve", help="the Overwatch web view at / and the HTTP API (OpenAPI at /docs)")
    s.add_argument("--port", type=int, default=8765)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--store", default=None, help="run store file (default: ESPER_STORE_PATH or .esper/karn.sqlite)")
    s.add_argument("--nats", default=None, help="stream live events from this bus instead of tailing the store")
    s.add_argument("--reports", default=None, help="experiment result directories to show (e.g. docs/results)")
    s.set_defaults(func=cmd_serve)

    e = sub.add_parser("export", help="export one run as JSON Lines or Parquet")
    e.add_argument("run", help="run id")
    e.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl")
    e.add_argument("--out", required=True, help="a .jsonl file, or a directory for Parquet (one file per table)")
    e.add_argument("--store", default=None)
    e.set_defaults(func=cmd_export)

    r = sub.add_parser("rebuild", help="rebuild the run store from the TELEMETRY and STEPS streams")
    r.add_argument("--store", default=None, help="store file to (re)create; replaced only once the rebuild is whole")
    r.add_argument("--nats", default=None)
    r.set_defaults(func=cmd_rebuild)
