"""The local supervisor: child processes restarted with backoff when they die, log lines prefixed by service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("esper.supervisor")

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the supervisor dies, however it dies (Linux prctl).

    Without it a supervisor killed by SIGKILL or a timeout leaves its services running; they reconnect to the next
    bus that opens on the same port and join a stranger's run.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)



@dataclass
class ChildSpec:
    """A supervised command: its name (the log prefix), argv and the environment added to ours."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def service_child(
    name: str, nats_url: str, extra_env: dict[str, str] | None = None, label: str | None = None
) -> ChildSpec:
    """The child that runs `esper service NAME` against the given bus."""
    env = {"ESPER_NATS_URL": nats_url, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    return ChildSpec(name=label or name, argv=[sys.executable, "-m", "services.operator.cli", "service", name], env=env)


@dataclass
class ChildState:
    """A child's current process and how often it was restarted."""

    spec: ChildSpec
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = 0.0


class Supervisor:
    """Keeps every child running until stop(); a child that dies is restarted with exponential backoff."""

    def __init__(
        self,
        children: list[ChildSpec],
        *,
        output: Callable[[str], None] | None = None,
        min_backoff: float = 0.5,
        max_backoff: float = 10.0,
        healthy_after: float = 30.0,
    ) -> None:
        self.children = {spec.name: ChildState(spec) for spec in children}
        self._output = output or (lambda line: print(line, flush=True))
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._healthy_after = healthy_after
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        width = max((len(name) for name in self.children), default=7)
        self._prefix = {name: f"[{name:<{width}}]" for name in self.children}

    async def start(self) -> None:
        for state in self.children.values():
            self._tasks.append(asyncio.create_task(self._keep_alive(state), name=f"supervise-{state.spec.name}"))

    def pid(self, name: str) -> int | None:
        process = self.children[name].process
        return process.pid if process is not None and process.returncode is None else None

    def signal(self, name: str, sig: int) -> None:
        """Send `sig` to a running child (SIGKILL to test restarts, SIGSTOP/SIGCONT to pause it)."""
        process = self.children[name].process
        if process is None or process.returncode is not None:
            raise ProcessLookupError(f"{name} is not running")
        process.send_signal(sig)

    async def _spawn(self, state: ChildState) -> asyncio.subprocess.Process:
        env = {**os.environ, **state.spec.env}
        process = await asyncio.create_subprocess_exec(
            *state.spec.argv,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        state.process = process
        state.started_at = time.monotonic()
        return process

    async def _pump(self, name: str, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        prefix = self._prefix[name]
        while True:
            line = await process.stdout.readline()
            if not line:
                return
            self._output(f"{prefix} {line.decode(errors='replace').rstrip()}")

    async def _keep_alive(self, state: ChildState) -> None:
        backoff = self._min_backoff
        name = state.spec.name
        while not self._stopping.is_set():
            process = await self._spawn(state)
            pump = asyncio.create_task(self._pump(name, process))
            code = await process.wait()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pump, timeout=2)
            if self._stopping.is_set():
                return
            lived = time.monotonic() - state.started_at
            if lived > self._healthy_after:
                backoff = self._min_backoff
            state.restarts += 1
            self._output(f"{self._prefix[name]} exited with code {code}; restart #{state.restarts} in {backoff:.1f}s")
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=backoff)
                return
            except TimeoutError:
                pass
            backoff = min(backoff * 2, self._max_backoff)

    async def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM every child (they drain), then SIGKILL whatever is still alive after `timeout`."""
        self._stopping.set()
        for state in self.children.values():
            if state.process is not None and state.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    state.process.send_signal(signal.SIGTERM)
                    # A paused child (SIGSTOP) would only see SIGTERM once continued.
                    state.process.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + timeout
        for state in self.children.values():
            if state.process is None:
                continue
            try:
                await asyncio.wait_for(state.process.wait(), timeout=max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                log.warning("%s did not stop in %.0fs: killing", state.spec.name, timeout)
                with contextlib.suppress(ProcessLookupError):
                    state.process.kill()
                await state.process.wait()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
