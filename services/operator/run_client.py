"""`esper run`: submit a RunSpec, follow its telemetry with a progress bar, and write `report.json`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from leyline_schemas import (
    ArmSpec,
    BlueprintAction,
    EpisodeOutcome,
    EpochCompleted,
    LeylineDecodeError,
    PolicyUpdated,
    PPOUpdateCompleted,
    RemoteError,
    RewardFamily,
    RewardMode,
    RunAccepted,
    RunFinished,
    RunSpec,
    TelemetryEvent,
    blueprint_name,
    decode,
    routes,
    subjects,
    to_builtins,
)
from services.operator.registry import SERVICE_NAMES
from services.operator.run_attachment import attached
from services.operator.stack import LocalStack
from services.runtime.bus import connect, request
from services.runtime.discovery import wait_for_services
from services.runtime.settings import RuntimeSettings

log = logging.getLogger("esper.run")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="digits")
    p.add_argument("--episodes", type=int, default=3, help="episodes in total, spread over the envs")
    p.add_argument("--envs", type=int, default=1)
    p.add_argument("--episode-length", type=int, default=None, help="epochs per episode (default: the task's)")
    p.add_argument("--policy", default="heuristic", help="policy id: heuristic, random, wait or a learned line")
    p.add_argument("--reward-mode", default="simplified", choices=[m.value for m in RewardMode])
    p.add_argument("--slots", default=None, help="comma-separated slot ids (default: the task's)")
    p.add_argument("--max-seeds", type=int, default=0, help="0 = unlimited")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--max-batches", type=int, default=0, help="train/val batches per epoch; 0 = all")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=1,
        metavar="N",
        help="host checkpoint after every N epochs, which an interrupted episode resumes from (0: none)",
    )
    p.add_argument(
        "--blueprints",
        default=None,
        metavar="A,B,...",
        help="the blueprints germinations may use, e.g. conv_light,conv_ladder (default: the task's full set)",
    )
    p.add_argument("--synthetic", action="store_true", help="synthetic data of the task's shape")
    p.add_argument("--out", default=None, help="report directory (default: runs/<run id>)")
    p.add_argument("--nats", default=None, help="use this bus instead of starting an embedded one")
    p.add_argument("--timeout", type=float, default=3600.0, help="give up after this many seconds")
    p.add_argument("--rounds", type=int, default=4, help="with --policy ppo: PPO rounds of --envs episodes each")
    p.add_argument("--eval-episodes", type=int, default=4, help="with --policy ppo: held-out episodes per contender")
    p.add_argument(
        "--reward-family",
        default=RewardFamily.CONTRIBUTION.value,
        choices=[f.value for f in RewardFamily],
        help="loss: rewards from validation-loss deltas (only with --reward-mode shaped)",
    )
    p.add_argument("--strict-gates", action="store_true", help="lifecycle gates as the reference's strict ones")
    p.add_argument(
        "--async",
        dest="run_ahead",
        action="store_true",
        help="with --policy ppo: envs run ahead of the learner (steps may act with older versions; the lag is shown)",
    )
    p.add_argument(
        "--resume-line",
        default=None,
        metavar="POLICY_ID",
        help="with --policy ppo: train this existing line on from its latest version instead of a fresh one",
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--detach",
        action="store_true",
        help="with --nats: submit the run and exit; it runs on its own (esper runs list|show|stop|resume)",
    )


def parse_blueprints(text: str | None) -> list[BlueprintAction]:
    """`--blueprints conv_light,conv_ladder` as blueprint values; None or empty means the task's full set."""
    names = [name.strip() for name in (text or "").split(",") if name.strip()]
    known = {blueprint_name(bp): bp for bp in BlueprintAction if bp is not BlueprintAction.NOOP}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"--blueprints: {', '.join(unknown)} unknown; blueprints are {', '.join(known)}")
    return [known[name] for name in names]


def reward_choice(mode: str, family: str) -> tuple[RewardMode, RewardFamily]:
    """The reward mode and family flags, checked together: the loss family exists only with mode shaped (§6.1)."""
    chosen_mode, chosen_family = RewardMode(mode), RewardFamily(family)
    if chosen_family is RewardFamily.LOSS and chosen_mode is not RewardMode.SHAPED:
        raise ValueError(f"--reward-family loss needs --reward-mode shaped, not {chosen_mode.value}")
    return chosen_mode, chosen_family


@dataclass
class RunFollower:
    """Collects a run's telemetry: epochs for the progress bar, episode outcomes for the report."""

    spec: RunSpec
    epochs_seen: int = 0
    last_accuracy: dict[int, float] = field(default_factory=dict)
    outcomes: dict[tuple[int, int], EpisodeOutcome] = field(default_factory=dict)
    finished: RunFinished | None = None
    undecodable: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    updates: dict[tuple[str, int], PPOUpdateCompleted] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    #: (env, episode) → epoch → that epoch's EpochCompleted: the per-epoch curves (accuracy, compute, ops).
    epoch_events: dict[tuple[int, int], dict[int, EpochCompleted]] = field(default_factory=dict)

    async def on_message(self, msg: Any) -> None:
        try:
            event = decode(msg.data, TelemetryEvent)
        except LeylineDecodeError:
            self.undecodable += 1
            return
        payload = event.payload
        if isinstance(payload, EpochCompleted):
            self.epochs_seen += 1
            if event.env_id is not None:
                self.last_accuracy[event.env_id] = payload.val_accuracy
                if event.episode is not None and event.epoch is not None:
                    self.epoch_events.setdefault((event.env_id, event.episode), {})[event.epoch] = payload
        elif isinstance(payload, EpisodeOutcome):
            self.outcomes[(payload.env_id, payload.episode)] = payload
        elif isinstance(payload, RunFinished):
            self.finished = payload
        elif isinstance(payload, PPOUpdateCompleted):
            self.updates[(payload.policy_id, payload.version)] = payload
        elif isinstance(payload, PolicyUpdated):
            self.versions[payload.policy_id] = max(payload.version, self.versions.get(payload.policy_id, -1))
        self.changed.set()

    @property
    def failed(self) -> bool:
        return self.finished is not None and self.finished.state != "completed"

    @property
    def done(self) -> bool:
        return len(self.outcomes) >= self.spec.episodes or (
            self.finished is not None and self.finished.state != "completed"
        )


def episode_rows(follower: RunFollower) -> list[dict[str, Any]]:
    """One row per scored episode, in episode order; `round` is the batch of envs it ran in."""
    return [
        {
            "episode": o.episode,
            "env": o.env_id,
            "round": o.episode // follower.spec.n_envs,
            "final_accuracy": round(o.final_accuracy, 4),
            "host_params": o.host_params,
            "seed_params_added": o.seed_params_added,
            "seeds_germinated": o.seeds_germinated,
            "seeds_fossilized": o.seeds_fossilized,
            "seeds_pruned": o.seeds_pruned,
            "episode_return": round(o.episode_return, 6),
            "length": o.length,
            "rollbacks": o.rollbacks,
        }
        for o in sorted(follower.outcomes.values(), key=lambda o: o.episode)
    ]


def build_report(spec: RunSpec, accepted: RunAccepted, follower: RunFollower, wall_seconds: float) -> dict[str, Any]:
    arm = spec.arms[0]
    episodes = episode_rows(follower)
    accuracies = [e["final_accuracy"] for e in episodes]
    return {
        "run_id": spec.run_id,
        "task": spec.task,
        "policy": arm.policy_id,
        "reward_mode": arm.reward_mode.value,
        "reward_family": arm.reward_family.value,
        "n_envs": spec.n_envs,
        "episode_length": spec.episode_length,
        "slots": accepted.slot_ids,
        "seed": spec.seed,
        "wall_seconds": round(wall_seconds, 2),
        "state": follower.finished.state if follower.finished else ("completed" if follower.done else "incomplete"),
        "episodes": episodes,
        "summary": {
            "episodes_completed": len(episodes),
            "mean_final_accuracy": round(statistics.fmean(accuracies), 4) if accuracies else None,
            "seeds_fossilized": sum(e["seeds_fossilized"] for e in episodes),
            "seeds_pruned": sum(e["seeds_pruned"] for e in episodes),
            "mean_episode_return": round(statistics.fmean(e["episode_return"] for e in episodes), 6)
            if episodes
            else None,
        },
        "spec": to_builtins(spec),
    }


async def follow_run(
    nc: Client,
    spec: RunSpec,
    *,
    timeout: float,
    show_progress: bool,
    until: Callable[[RunFollower], bool] | None = None,
) -> tuple[RunAccepted, RunFollower, float]:
    """Submit `spec` and follow its telemetry until every episode has an outcome (and `until` holds, if given).

    The run is attached to this client (services/tolaria/run_control.py): a heartbeat renews the attachment while
    it follows, so a client that is killed leaves a run that Tolaria stops, instead of one that runs on unseen. Leaving
    early (the timeout, Ctrl-C, an error) stops the run with the reason; a run followed to its end is detached.
    """
    async with attached(nc, spec.run_id) as leaving:
        accepted, follower, wall = await _follow(nc, spec, timeout=timeout, show_progress=show_progress, until=until)
        finished = follower.done and (until is None or until(follower) or follower.failed)
        leaving.reason = "" if finished else f"its client gave up after --timeout {timeout:.0f} s"
    return accepted, follower, wall


async def _follow(
    nc: Client,
    spec: RunSpec,
    *,
    timeout: float,
    show_progress: bool,
    until: Callable[[RunFollower], bool] | None,
) -> tuple[RunAccepted, RunFollower, float]:
    js = nc.jetstream()
    follower = RunFollower(spec)
    # An ordered consumer from the start of the run's subjects: no event is missed, even one published
    # before this subscription was made.
    sub = await js.subscribe(
        f"{subjects.PREFIX}.telemetry.{spec.run_id}.>", cb=follower.on_message, ordered_consumer=True
    )
    started = time.monotonic()
    accepted = await request(nc, routes.RUNS_START, spec, timeout=120.0, retries=3)
    total_epochs = spec.episodes * spec.episode_length
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        disable=not show_progress,
        transient=False,
    )
    with progress:
        bar = progress.add_task(f"{spec.task} {spec.run_id}", total=total_epochs, detail="")
        while not (follower.done and (until is None or until(follower) or follower.failed)):
            if time.monotonic() - started > timeout:
                break
            follower.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(follower.changed.wait(), timeout=1.0)
            accs = " ".join(f"env{e}:{a:.1f}%" for e, a in sorted(follower.last_accuracy.items()))
            detail = f"episodes {len(follower.outcomes)}/{spec.episodes} {accs}"
            progress.update(bar, completed=min(follower.epochs_seen, total_epochs), detail=detail)
    await sub.unsubscribe()
    return accepted, follower, time.monotonic() - started


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    from services.tolaria.tasks import get_task

    task = get_task(args.task)
    slots = [s.strip() for s in args.slots.split(",")] if args.slots else list(task.default_slots)
    if getattr(args, "run_ahead", False) or getattr(args, "resume_line", None):
        raise ValueError("--async and --resume-line train a line: they need --policy ppo")
    mode, family = reward_choice(args.reward_mode, getattr(args, "reward_family", RewardFamily.CONTRIBUTION.value))
    return RunSpec(
        run_id=f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}",
        task=task.name,
        slots=slots,
        episodes=args.episodes,
        episode_length=args.episode_length or task.episode_length,
        n_envs=args.envs,
        arms=[ArmSpec(arm_id="main", policy_id=args.policy, reward_mode=mode, reward_family=family)],
        seed=args.seed,
        max_seeds=args.max_seeds,
        max_batches=args.max_batches,
        batch_size=args.batch_size or task.batch_size,
        permissive_gates=not getattr(args, "strict_gates", False),
        synthetic=args.synthetic,
        created_at=time.time(),
        checkpoint_every=getattr(args, "checkpoint_every", 1),
        blueprints=parse_blueprints(getattr(args, "blueprints", None)),
    )


@contextlib.asynccontextmanager
async def bus_session(
    nats_url: str | None, out_dir: Path, *, extra_env: dict[str, str] | None = None
) -> AsyncIterator[Client]:
    """A connection to `nats_url`, or to an embedded bus with the five services (logs in out_dir/services.log).

    `extra_env` reaches the embedded services only (e.g. `ESPER_POLICY_HIDDEN` for Simic); it is ignored when a
    bus is given, whose services are already configured.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    stack: LocalStack | None = None
    log_file = None
    if nats_url is None:
        state_dir = Path(tempfile.mkdtemp(prefix="esper-run-"))
        log_file = open(out_dir / "services.log", "a")  # noqa: SIM115 - closed in finally
        sink = log_file

        def write(line: str) -> None:
            sink.write(line + "\n")
            sink.flush()

        stack = LocalStack(state_dir=state_dir, output=write, extra_env=dict(extra_env or {}))
        nats_url = await stack.start()
        print(f"esper: embedded bus at {nats_url} (service logs: {out_dir / 'services.log'})", file=sys.stderr)
    try:
        nc = await connect(RuntimeSettings.from_env({"service": "cli", "nats_url": nats_url}))
        try:
            await wait_for_services(nc, list(SERVICE_NAMES), timeout=180.0)
            yield nc
        finally:
            await nc.close()
    finally:
        if stack is not None:
            await stack.stop()
        if log_file is not None:
            log_file.close()


async def run_job(
    spec: RunSpec, nats_url: str | None, out_dir: Path, *, timeout: float, show_progress: bool
) -> dict[str, Any]:
    async with bus_session(nats_url, out_dir) as nc:
        accepted, follower, wall = await follow_run(nc, spec, timeout=timeout, show_progress=show_progress)
    report = build_report(spec, accepted, follower, wall)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def run_from_args(args: argparse.Namespace, nats_url: str | None) -> int:
    """`esper run` with a served policy: one run end to end, its report written (`--policy ppo` trains instead:
    `services.experiments.training.train_from_args`)."""
    logging.basicConfig(level=logging.WARNING)
    try:
        spec = spec_from_args(args)
    except ValueError as exc:
        print(f"esper run: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "detach", False):
        return submit_detached(spec, nats_url)
    out_dir = Path(args.out or f"runs/{spec.run_id}")
    try:
        report = asyncio.run(
            run_job(
                spec,
                nats_url,
                out_dir,
                timeout=args.timeout,
                show_progress=not args.no_progress and sys.stderr.isatty(),
            )
        )
    except RemoteError as exc:
        print(f"esper run: the run was refused: {exc.reply.message}", file=sys.stderr)
        return 2
    summary = report["summary"]
    print(
        f"{report['run_id']}: {summary['episodes_completed']}/{spec.episodes} episodes, "
        f"mean final accuracy {summary['mean_final_accuracy']}%, fossilized {summary['seeds_fossilized']}, "
        f"pruned {summary['seeds_pruned']}, {report['wall_seconds']}s -> {out_dir / 'report.json'}"
    )
    return 0 if report["state"] == "completed" else 1


def submit_detached(spec: RunSpec, nats_url: str | None) -> int:
    """Submit a run that no client follows: it runs until it ends or is stopped, across `esper down` / `esper up`.
    Without `nats_url`, the bus is the one every CLI command finds (`bus_url`: ESPER_NATS_URL, else `esper up`'s)."""
    from services.operator.up import run_on_bus

    try:
        accepted = run_on_bus(nats_url, lambda nc: request(nc, routes.RUNS_START, spec, timeout=120.0, retries=3))
    except RemoteError as exc:
        print(f"esper run: the run was refused: {exc.reply.message}", file=sys.stderr)
        return 2
    print(accepted.run_id)
    print(f"esper: {accepted.run_id} runs detached; follow it with `esper karn` or `esper runs show`", file=sys.stderr)
    return 0
