"""Karn's HTTP API (FastAPI): runs, envs (and one env's counterfactual detail), seeds, policies, outcomes,
analytics, the ladder report, experiment reports, a live event stream (SSE) and, at `/`, the Overwatch web view.

Every response is strict JSON: non-finite numbers become null. An unknown run id is a 404 naming the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

from leyline_schemas import LeylineDecodeError, TelemetryEvent, decode, subjects, to_builtins
from services import __version__
from services.karn import overwatch, queries
from services.karn.env_detail import UnknownEnv, env_detail, lifecycles
from services.karn.jsonsafe import json_ready
from services.karn.ladder_report import ladder_report
from services.karn.queries import UnknownRun
from services.karn.reports import UnknownReport, list_reports, report_summary
from services.karn.store import RunStore

KEEPALIVE_SECONDS = 15.0
STORE_INT_MAX = 2**63 - 1  # the store is SQLite: an integer beyond 64 bits is a 422, never a 500


class NotFound(BaseModel):
    """A 404: what was not found, and the run it was looked for in."""

    detail: str
    run_id: str | None = None


NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": NotFound, "description": "no such run (or seed)"}}
StoreInt = Annotated[int, PathParam(ge=0, le=STORE_INT_MAX)]


class StrictJSONResponse(JSONResponse):
    """JSON with NaN and ±Infinity replaced by null, never emitted as invalid JSON."""

    def render(self, content: Any) -> bytes:
        return json.dumps(json_ready(content), allow_nan=False, separators=(",", ":")).encode()


def _sse(event: str, data: dict[str, Any], event_id: str | int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(json_ready(data), allow_nan=False)}\n\n".encode()


def create_app(
    store_path: Path, nats_url: str | None = None, poll_seconds: float = 0.5, reports_dir: Path | None = None
) -> FastAPI:
    """The API over the store at `store_path`; with `nats_url`, the event stream comes live from the bus; with
    `reports_dir`, the experiment reports under it (e.g. `docs/results`)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.store = RunStore.open(store_path)
        try:
            yield
        finally:
            app.state.store.close()

    app = FastAPI(
        title="Esper Karn",
        version=__version__,
        description="The run store of Esper: runs, envs, seeds, policies, episode outcomes, analytics, live events.",
        default_response_class=StrictJSONResponse,
        lifespan=lifespan,
    )

    def store() -> RunStore:
        current: RunStore = app.state.store
        return current

    @app.exception_handler(UnknownRun)
    async def unknown_run(_: Request, exc: UnknownRun) -> StrictJSONResponse:
        return StrictJSONResponse(status_code=404, content={"detail": str(exc), "run_id": exc.run_id})

    @app.exception_handler(UnknownEnv)
    @app.exception_handler(UnknownReport)
    async def unknown_thing(_: Request, exc: LookupError) -> StrictJSONResponse:
        return StrictJSONResponse(status_code=404, content={"detail": str(exc)})

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict[str, Any]:
        """Liveness, with the store's path and counters (undecodable messages, per stream)."""
        return {"status": "ok", "store": str(store().path), "counters": store().counters(), "nats": nats_url}

    @app.get("/runs", tags=["runs"])
    def runs() -> list[dict[str, Any]]:
        """Every run in the store with its progress, oldest first."""
        return queries.list_runs(store())

    @app.get("/runs/{run_id}", tags=["runs"], responses=NOT_FOUND)
    def run_status(run_id: str) -> dict[str, Any]:
        """One run: task, shape, state, episodes done, steps, best and mean accuracy, committed epochs."""
        return queries.run_status(store(), run_id)

    @app.get("/runs/{run_id}/envs", tags=["runs"], responses=NOT_FOUND)
    def envs(run_id: str) -> list[dict[str, Any]]:
        """Each env's latest epoch: accuracy, best, slots (stage:blueprint), contributions, last action."""
        return queries.envs(store(), run_id)

    @app.get("/runs/{run_id}/envs/{env_id}", tags=["runs"], responses=NOT_FOUND)
    def env(
        run_id: str,
        env_id: StoreInt,
        episode: Annotated[int | None, Query(ge=0, le=STORE_INT_MAX, description="default: the newest")] = None,
    ) -> dict[str, Any]:
        """One env's latest step: seeds, the counterfactual waterfall, pair interactions and terminal Shapley."""
        return env_detail(store(), run_id, env_id, episode)

    @app.get("/runs/{run_id}/lifecycle", tags=["seeds"], responses=NOT_FOUND)
    def lifecycle(run_id: str) -> dict[str, Any]:
        """Each env's newest episode as stage segments per seed (the web view's swimlanes)."""
        return lifecycles(store(), run_id)

    @app.get("/runs/{run_id}/seeds", tags=["seeds"], responses=NOT_FOUND)
    def seeds(
        run_id: str,
        env_id: Annotated[int | None, Query(ge=0, le=STORE_INT_MAX)] = None,
        stage: Annotated[str | None, Query(description="GERMINATED, TRAINING, …, FOSSILIZED, PRUNED")] = None,
        blueprint: str | None = None,
    ) -> list[dict[str, Any]]:
        """Seeds of a run with how they ended (or where they are now)."""
        return queries.seeds(store(), run_id, env_id, stage, blueprint)

    @app.get("/runs/{run_id}/seeds/{env_id}/{episode}/{seed_id}", tags=["seeds"], responses=NOT_FOUND)
    def seed(run_id: str, env_id: StoreInt, episode: StoreInt, seed_id: str) -> dict[str, Any]:
        """One seed and its lifecycle history: germination, stage changes, gates, fossilization or pruning."""
        found = queries.seed_lifecycle(store(), run_id, env_id, episode, seed_id)
        if found is None:
            raise HTTPException(404, f"run {run_id!r} has no seed {seed_id!r} in env {env_id} episode {episode}")
        return found

    @app.get("/runs/{run_id}/policies", tags=["policies"], responses=NOT_FOUND)
    def run_policies(run_id: str) -> list[dict[str, Any]]:
        """The policy lines a run acted with, the versions seen, and each version's PPO statistics."""
        return queries.policies(store(), run_id)

    @app.get("/policies", tags=["policies"])
    def all_policies() -> list[dict[str, Any]]:
        """Every policy line and version Karn has seen published or updated."""
        return queries.policies(store())

    @app.get("/runs/{run_id}/episodes", tags=["runs"], responses=NOT_FOUND)
    def episodes(run_id: str) -> list[dict[str, Any]]:
        """Episode outcomes: final accuracy, parameter ratio, seeds, return under the run's reward mode."""
        return queries.episodes(store(), run_id)

    @app.get("/runs/{run_id}/epochs", tags=["runs"], responses=NOT_FOUND)
    def epochs(run_id: str) -> list[dict[str, Any]]:
        """Committed epochs (the commit barrier across envs): one mean snapshot per round and epoch."""
        return queries.epochs(store(), run_id)

    @app.get("/runs/{run_id}/analytics", tags=["analytics"], responses=NOT_FOUND)
    def analytics(run_id: str) -> dict[str, Any]:
        """Per-blueprint statistics, per-env seed scoreboards, the Pareto frontier and its hypervolume."""
        return queries.analytics(store(), run_id)

    @app.get("/runs/{run_id}/ladder", tags=["analytics"], responses=NOT_FOUND)
    def ladder(
        run_id: str,
        first_episode: Annotated[int, Query(ge=0, le=STORE_INT_MAX, description="only episodes from this one")] = 0,
        last_episode: Annotated[
            int | None, Query(ge=0, le=STORE_INT_MAX, description="only episodes up to this one (inclusive)")
        ] = None,
    ) -> dict[str, Any]:
        """Internal-op usage, blueprint shares, invalid actions, each ladder seed's thrash figures and the deltas
        after a level change against WAIT (plans/kasmina2-phase0.md §9, §12.1)."""
        return ladder_report(store(), run_id, first_episode, last_episode)

    @app.get("/experiments", tags=["experiments"])
    def experiments() -> list[dict[str, Any]]:
        """The experiment reports under the reports directory: name, title, kind and verdict."""
        return list_reports(reports_dir)

    @app.get("/experiments/{name}", tags=["experiments"], responses=NOT_FOUND)
    def experiment(name: str) -> dict[str, Any]:
        """One report: verdict, settings, cohort table, comparisons, checks, accuracy against training FLOPs."""
        return report_summary(reports_dir, name)

    @app.get("/runs/{run_id}/events", tags=["events"], responses=NOT_FOUND)
    def events(
        run_id: str,
        after: Annotated[
            int, Query(ge=0, le=STORE_INT_MAX, description="only events stored after this sequence number")
        ] = 0,
        kind: Annotated[list[str] | None, Query(description="payload kinds, e.g. epoch_completed")] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 500,
    ) -> list[dict[str, Any]]:
        """Stored events of a run, oldest first; page with `after` = the last `seq` you received."""
        return queries.events(store(), run_id, after, kind, limit)

    @app.get("/runs/{run_id}/stream", tags=["events"], response_class=StreamingResponse, responses=NOT_FOUND)
    async def stream(
        request: Request,
        run_id: str,
        after: Annotated[
            int | None, Query(ge=0, le=STORE_INT_MAX, description="replay stored events after this seq (store mode)")
        ] = None,
        limit: Annotated[
            int | None, Query(ge=1, le=STORE_INT_MAX, description="close the stream after this many events")
        ] = None,
    ) -> StreamingResponse:
        """Server-sent events of a run as they happen: `event: <kind>`, `data: <event JSON>`."""
        if nats_url is not None:
            if not await _run_on_bus(nats_url, run_id):
                await asyncio.to_thread(queries.require_run, store(), run_id)
            body = _bus_events(request, nats_url, run_id, limit)
        else:
            await asyncio.to_thread(queries.require_run, store(), run_id)
            start = after if after is not None else _last_event_id(request)
            body = _store_events(request, store(), run_id, start, limit, poll_seconds)
        return StreamingResponse(body, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    overwatch.mount(app)
    return app


def _last_event_id(request: Request) -> int | None:
    """The SSE `Last-Event-ID` a reconnecting client sent: a store seq, or None; anything else is a 422."""
    raw = request.headers.get("last-event-id")
    if not raw:
        return None
    if not raw.isascii() or not raw.isdigit() or int(raw) > STORE_INT_MAX:
        raise HTTPException(422, f"Last-Event-ID must be a store sequence number in [0, {STORE_INT_MAX}], got {raw!r}")
    return int(raw)


async def _store_events(
    request: Request, store: RunStore, run_id: str, after: int | None, limit: int | None, poll_seconds: float
) -> AsyncIterator[bytes]:
    """Tail the store: events appended after `after` (default: from now on), polled every `poll_seconds`."""
    if after is None:
        rows = await asyncio.to_thread(store.read, "SELECT coalesce(max(seq), 0) AS seq FROM events", ())
        after = int(rows[0]["seq"])
    sent = 0
    quiet_since = time.monotonic()
    yield b": karn event stream\n\n"
    while not await request.is_disconnected():
        batch = await asyncio.to_thread(queries.events, store, run_id, after, None, 500)
        for event in batch:
            yield _sse(str(event["payload"]["kind"]), event, event["seq"])
            after = int(event["seq"])
            sent += 1
            if limit is not None and sent >= limit:
                return
        if batch:
            quiet_since = time.monotonic()
            continue
        if time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
            yield b": keep-alive\n\n"
            quiet_since = time.monotonic()
        await asyncio.sleep(poll_seconds)


async def _run_on_bus(nats_url: str, run_id: str) -> bool:
    from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NotFoundError

    from services.runtime.bus import connect
    from services.runtime.settings import RuntimeSettings

    nc = await connect(RuntimeSettings.from_env({"service": "karn-api", "nats_url": nats_url, "connect_timeout": 5.0}))
    try:
        kv = await nc.jetstream().key_value(subjects.RUNS_BUCKET)
        await kv.get(subjects.run_key(run_id))
    except (BucketNotFoundError, KeyNotFoundError, NotFoundError):
        return False
    finally:
        await nc.close()
    return True


async def _bus_events(request: Request, nats_url: str, run_id: str, limit: int | None) -> AsyncIterator[bytes]:
    """Live events straight from the bus (a plain subscription: nothing durable, nothing acknowledged)."""
    from services.runtime.bus import connect
    from services.runtime.settings import RuntimeSettings

    nc = await connect(RuntimeSettings.from_env({"service": "karn-api", "nats_url": nats_url, "connect_timeout": 5.0}))
    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=10_000)

    async def on_message(msg: Any) -> None:
        try:
            event = decode(msg.data, TelemetryEvent)
        except LeylineDecodeError:
            return
        kind = str(type(event.payload).__struct_config__.tag)
        with contextlib.suppress(asyncio.QueueFull):
            # A client that cannot keep up loses events, never slows the bus.
            queue.put_nowait(_sse(kind, {"kind": kind, **to_builtins(event)}, event.event_id))

    sub = await nc.subscribe(subjects.telemetry_subject(run_id, "x").rsplit(".", 1)[0] + ".>", cb=on_message)
    sent = 0
    try:
        yield b": karn event stream (live from the bus)\n\n"
        while not await request.is_disconnected():
            try:
                chunk = await asyncio.wait_for(queue.get(), timeout=KEEPALIVE_SECONDS)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            yield chunk
            sent += 1
            if limit is not None and sent >= limit:
                return
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        await nc.close()
