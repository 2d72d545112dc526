"""Tolaria's bus adapter: accepts runs (`esper.v1.runs.*`) and runs the env worker in the background."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import msgspec
from nats.js.errors import KeyWrongLastSequenceError

from leyline_schemas import (
    ArmSpec,
    ErrorCode,
    RewardFamily,
    RewardMode,
    RunAccepted,
    RunResumeRequest,
    RunSpec,
    RunStarted,
    RunState,
    RunStatus,
    RunStatusRequest,
    RunStopRequest,
    Topology,
    encode,
    routes,
    subjects,
)
from leyline_schemas.lifecycle import allowed_blueprints, foreign_blueprints
from leyline_schemas.policy_ids import BUILTIN_POLICY_IDS
from services.policy.pointers import read_pointer
from services.runtime import jetstream
from services.runtime.service import Endpoint, RequestRejected, ServiceContext, ServiceDefinition
from services.runtime.settings import RuntimeSettings
from services.runtime.torch_threads import set_torch_threads
from services.tolaria import leases, run_control
from services.tolaria.acceleration import AMP_MODES, choose
from services.tolaria.data import DatasetUnavailable
from services.tolaria.tasks import get_task
from services.tolaria.torch_thread import run_torch
from services.tolaria.worker import EnvWorker, load_task_data

log = logging.getLogger("esper.tolaria")


@dataclass(frozen=True, kw_only=True)
class TolariaSettings(RuntimeSettings):
    """Tolaria's settings: how many envs one worker drives, lease timing, where datasets live."""

    service: str = "tolaria"
    max_envs: int = 4
    lease_ttl: float = 15.0
    poll_interval: float = 0.5
    data_dir: str = ""
    step_timeout: float = 30.0
    step_deadline: float = 180.0
    #: An episode started this many times without ending fails its run (a fault that kills the worker at the same
    #: point every time would otherwise restart it forever).
    max_episode_attempts: int = 10
    torch_threads: int = 0
    amp: str = "auto"
    compile: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_episode_attempts < 1:
            raise ValueError(f"ESPER_MAX_EPISODE_ATTEMPTS must be at least 1, got {self.max_episode_attempts}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"ESPER_AMP must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")


#: Tolaria's endpoints keep no state (runs live in KV); its env worker is the background task's own.
TolariaContext = ServiceContext[TolariaSettings, None]


def _check_controls(spec: RunSpec, slots: list[str], host_params: int) -> None:
    """The control cohorts' fields (plans/proof-baselines.md §3.1, §3.3): refuse what cannot be built honestly."""
    if not spec.morphogenesis and (spec.learn or spec.env_topologies):
        raise RequestRejected(
            ErrorCode.INVALID_REQUEST, "morphogenesis off cannot learn or replay a topology", "morphogenesis"
        )
    for env_id, manifest in spec.env_topologies.items():
        problem = ""
        if not 0 <= env_id < spec.n_envs:
            problem = f"env {env_id} is not one of the run's {spec.n_envs} envs"
        elif manifest.task != spec.task or manifest.host_params != host_params:
            problem = f"env {env_id}: the manifest is of {manifest.task} ({manifest.host_params} host params)"
        elif unknown := [s.slot_id for s in manifest.seeds if s.slot_id not in slots]:
            problem = f"env {env_id}: manifest slots {unknown} are not enabled ({slots})"
        if problem:
            raise RequestRejected(ErrorCode.INVALID_REQUEST, problem, "env_topologies")


def _check_blueprints(spec: RunSpec, topology: Topology) -> None:
    """The allowlist names only blueprints of the task's topology, and at least one besides NOOP."""
    foreign = [spec.blueprints[k].name for k in foreign_blueprints(spec.blueprints, topology)]
    if foreign:
        raise RequestRejected(
            ErrorCode.INVALID_REQUEST,
            f"blueprints {foreign} are not blueprints of a {topology.value} host",
            "blueprints",
        )
    if spec.blueprints and not allowed_blueprints(spec.blueprints, topology):
        raise RequestRejected(ErrorCode.INVALID_REQUEST, "the blueprint allowlist names only NOOP", "blueprints")


def _check_spec(spec: RunSpec) -> tuple[RunSpec, int]:
    """Refuse a spec that cannot run, naming the field; fill in the task's default slots and arm.

    Builds the host once (on the torch thread) to check the slots and count its parameters.
    """
    try:
        subjects.run_key(spec.run_id)
    except ValueError as exc:
        raise RequestRejected(ErrorCode.INVALID_REQUEST, str(exc), "run_id") from exc
    for name in ("episodes", "n_envs", "episode_length", "batch_size"):
        if getattr(spec, name) < 1:
            raise RequestRejected(
                ErrorCode.INVALID_REQUEST, f"{name} must be at least 1, got {getattr(spec, name)}", name
            )
    if spec.max_seeds < 0 or spec.max_batches < 0:
        raise RequestRejected(ErrorCode.INVALID_REQUEST, "max_seeds and max_batches must be >= 0", "max_seeds")
    if spec.checkpoint_every < 0:
        raise RequestRejected(
            ErrorCode.INVALID_REQUEST, "checkpoint_every must be >= 0 (0: no host checkpoints)", "checkpoint_every"
        )
    if spec.internal_op_cooldown_epochs < 0:
        raise RequestRejected(
            ErrorCode.INVALID_REQUEST,
            f"internal_op_cooldown_epochs must be >= 0 (0: no cooldown), got {spec.internal_op_cooldown_epochs}",
            "internal_op_cooldown_epochs",
        )
    try:
        task = get_task(spec.task)
    except ValueError as exc:
        raise RequestRejected(ErrorCode.INVALID_REQUEST, str(exc), "task") from exc
    slots = list(spec.slots) or list(task.default_slots)
    host = task.build_host()
    available = [s.slot_id for s in host.injection_specs()]
    unknown = [s for s in slots if s not in available]
    if unknown or len(set(slots)) != len(slots) or not slots:
        raise RequestRejected(
            ErrorCode.INVALID_REQUEST,
            f"slots {slots} are not distinct injection points of {task.name}: {available}",
            "slots",
        )
    _check_controls(spec, slots, sum(p.numel() for p in host.parameters()))
    _check_blueprints(spec, task.topology)
    arms = list(spec.arms) or [ArmSpec(arm_id="main", policy_id="heuristic")]
    for arm in arms:
        if arm.reward_family is RewardFamily.LOSS and arm.reward_mode is not RewardMode.SHAPED:
            raise RequestRejected(
                ErrorCode.INVALID_REQUEST,
                f"arm {arm.arm_id}: the loss reward family exists only with reward mode shaped, "
                f"not {arm.reward_mode.value}",
                "arms",
            )
        if arm.from_version < 0:
            raise RequestRejected(ErrorCode.INVALID_REQUEST, f"arm {arm.arm_id}: from_version must be >= 0", "arms")
        cost = arm.internal_op_cost
        if cost is not None and not (math.isfinite(cost) and cost >= 0.0):
            raise RequestRejected(
                ErrorCode.INVALID_REQUEST,
                f"arm {arm.arm_id}: internal_op_cost is charged as a negative term, so it must be finite and >= 0, "
                f"got {cost}",
                "arms",
            )
    if spec.learn:
        # Each learning arm is its own line of versions: a shared or built-in id would never get a version 0.
        ids = [a.policy_id for a in arms]
        builtin = sorted(set(ids) & BUILTIN_POLICY_IDS.keys())
        if builtin or len(set(ids)) != len(ids):
            raise RequestRejected(
                ErrorCode.INVALID_REQUEST,
                f"a learning run needs a fresh policy id per arm (got {ids}; built-in ids {builtin} cannot learn)",
                "arms",
            )
    host_params = sum(p.numel() for p in host.parameters())
    checked = msgspec.structs.replace(
        spec, task=task.name, slots=slots, arms=arms, created_at=spec.created_at or time.time()
    )
    return checked, host_params


async def _check_lines(spec: RunSpec, ctx: TolariaContext) -> None:
    """A learning arm starts a fresh line or continues one from exactly where it is: round r of a line continued
    from vN is acted by vN + r, so an arm must name the version its line is at (`from_version`, 0 for a new line)."""
    policies = await jetstream.policies_bucket(ctx.js)
    for arm in spec.arms:
        pointer = await read_pointer(policies, arm.policy_id)
        if pointer is None and arm.from_version > 0:
            raise RequestRejected(
                ErrorCode.INVALID_REQUEST,
                f"arm {arm.arm_id}: line {arm.policy_id} has no version to continue from",
                "arms",
            )
        if pointer is not None and pointer.version != arm.from_version:
            raise RequestRejected(
                ErrorCode.INVALID_REQUEST,
                f"arm {arm.arm_id}: line {arm.policy_id} is at v{pointer.version}, not v{arm.from_version}; "
                f"continue it with from_version={pointer.version} (esper run --resume-line) or train a fresh id",
                "arms",
            )


async def handle_start(spec: RunSpec, ctx: TolariaContext) -> RunAccepted:
    spec, host_params = await run_torch(_check_spec, spec)
    settings = ctx.settings
    try:
        # Load once now: a dataset that cannot load fails the run's start, never mid-run.
        await run_torch(load_task_data, spec.task, spec.seed, spec.synthetic, settings.data_dir)
    except DatasetUnavailable as exc:
        raise RequestRejected(ErrorCode.UNAVAILABLE, str(exc), "task") from exc
    if spec.learn:
        await _check_lines(spec, ctx)
    kv = await jetstream.runs_bucket(ctx.js)
    try:
        await kv.create(subjects.run_key(spec.run_id), encode(spec))
    except KeyWrongLastSequenceError as exc:
        raise RequestRejected(ErrorCode.INVALID_REQUEST, f"run {spec.run_id} already exists", "run_id") from exc
    status = RunStatus(run_id=spec.run_id, state=RunState.RUNNING, episodes_total=spec.episodes, updated_at=time.time())
    await kv.put(subjects.run_status_key(spec.run_id), encode(status))
    await ctx.telemetry.emit(
        spec.run_id,
        RunStarted(
            task=spec.task,
            n_envs=spec.n_envs,
            episodes=spec.episodes,
            episode_length=spec.episode_length,
            slot_ids=list(spec.slots),
            policy_id=",".join(a.policy_id for a in spec.arms),
            reward_mode=spec.arms[0].reward_mode,
        ),
    )
    log.info("accepted %s: %s", spec.run_id, spec)
    return RunAccepted(
        run_id=spec.run_id,
        n_envs=spec.n_envs,
        episodes=spec.episodes,
        slot_ids=list(spec.slots),
        host_params=host_params,
    )


async def handle_status(message: RunStatusRequest, ctx: TolariaContext) -> RunStatus:
    kv = await jetstream.runs_bucket(ctx.js)
    status = await leases.read_status(kv, message.run_id)
    if status is None:
        raise RequestRejected(ErrorCode.UNKNOWN_RUN, f"no run {message.run_id!r}", "run_id")
    return status


async def handle_stop(message: RunStopRequest, ctx: TolariaContext) -> RunStatus:
    """Stop a running run with the reason given: its workers abandon the epoch in progress and give their leases
    back (a stopped run can be resumed). A run that already ended is answered as it is."""
    kv = await jetstream.runs_bucket(ctx.js)
    reason = message.reason or "stopped by request"
    status = await run_control.end_run(kv, ctx.telemetry, message.run_id, RunState.STOPPED, reason)
    if status is None:
        raise RequestRejected(ErrorCode.UNKNOWN_RUN, f"no run {message.run_id!r}", "run_id")
    return status


async def handle_resume(message: RunResumeRequest, ctx: TolariaContext) -> RunStatus:
    kv = await jetstream.runs_bucket(ctx.js)
    try:
        status = await run_control.resume_run(kv, ctx.telemetry, message.run_id, message.by)
    except run_control.NotResumable as exc:
        raise RequestRejected(ErrorCode.INVALID_REQUEST, str(exc), "run_id") from None
    if status is None:
        raise RequestRejected(ErrorCode.UNKNOWN_RUN, f"no run {message.run_id!r}", "run_id")
    return status


async def drive_envs(ctx: TolariaContext) -> None:
    settings = ctx.settings
    # On the torch thread: the thread count is per calling thread, and that one does all of Tolaria's torch work.
    await run_torch(set_torch_threads, settings.torch_threads)
    worker = EnvWorker(
        ctx,
        settings.max_envs,
        settings.lease_ttl,
        settings.poll_interval,
        settings.data_dir,
        settings.step_timeout,
        settings.step_deadline,
        max_episode_attempts=settings.max_episode_attempts,
        # ESPER_AMP (auto, bf16, off) and ESPER_COMPILE reach every env this worker drives.
        acceleration=choose(ctx.device, settings.amp, settings.compile),
    )
    await worker.run()


def definition() -> ServiceDefinition[TolariaSettings, None]:
    return ServiceDefinition(
        name="tolaria",
        description="Execution engine: hosts, the epoch loop, the governor, env workers",
        endpoints=[
            Endpoint("runs-start", routes.RUNS_START, handle_start, max_concurrency=4),
            Endpoint("runs-status", routes.RUNS_STATUS, handle_status),
            Endpoint("runs-stop", routes.RUNS_STOP, handle_stop),
            Endpoint("runs-resume", routes.RUNS_RESUME, handle_resume),
        ],
        background=[drive_envs],
        uses_torch=True,
    )
