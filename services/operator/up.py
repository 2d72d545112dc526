"""`esper up` / `esper down`: the embedded stack as a background supervisor with a pid file and the bus URL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from nats.aio.client import Client

from services.operator.embedded import PortInUse, port_is_free
from services.operator.registry import SERVICE_NAMES
from services.operator.security import read_env_file
from services.operator.stack import LocalStack
from services.runtime.bus import connect
from services.runtime.discovery import wait_for_services
from services.runtime.settings import RuntimeSettings

T = TypeVar("T")


def default_state_dir() -> Path:
    return Path(os.environ.get("ESPER_STATE_DIR", ".esper")).resolve()


def bus_file(state_dir: Path) -> Path:
    return state_dir / "bus.json"


def read_bus(state_dir: Path) -> dict[str, Any] | None:
    path = bus_file(state_dir)
    if not path.exists():
        return None
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except ValueError:
        return None
    return data


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        # Reap our own exited child first: a zombie still answers signal 0.
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def credentials(bus: dict[str, Any]) -> dict[str, str]:
    """The operator's `ESPER_NATS_*` variables for a stack started with `--secure` (empty otherwise)."""
    path = bus.get("credentials")
    if not path:
        return {}
    values = read_env_file(Path(path))
    return {k: v for k, v in values.items() if k in ("ESPER_NATS_USER", "ESPER_NATS_PASSWORD")}


def bus_url(explicit: str | None) -> str:
    """The bus a CLI command talks to: --nats, else ESPER_NATS_URL, else the stack `esper up` recorded (as its
    operator when it was started with --secure, unless ESPER_NATS_USER is set), else the default URL."""
    from services.runtime.settings import DEFAULT_NATS_URL

    if explicit:
        return explicit
    if os.environ.get("ESPER_NATS_URL"):
        return os.environ["ESPER_NATS_URL"]
    bus = read_bus(default_state_dir())
    if bus and not os.environ.get("ESPER_NATS_USER"):
        os.environ.update(credentials(bus))
    return str(bus["url"]) if bus else DEFAULT_NATS_URL


def run_on_bus(explicit: str | None, work: Callable[[Client], Awaitable[T]]) -> T:
    """Run `work` with a connection to the bus a CLI command talks to (`bus_url`), closed afterwards."""
    url = bus_url(explicit)

    async def run() -> T:
        nc = await connect(RuntimeSettings.from_env({"service": "cli", "nats_url": url, "connect_timeout": 5.0}))
        try:
            return await work(nc)
        finally:
            await nc.close()

    return asyncio.run(run())


async def supervise(state_dir: Path, nats_port: int | None = None, secure: bool = False) -> None:
    """Run the stack in the foreground until SIGTERM/SIGINT; publish the bus URL in `bus.json`."""
    state_dir.mkdir(parents=True, exist_ok=True)
    stack = LocalStack(state_dir=state_dir, nats_port=nats_port, secure=secure)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    url = await stack.start()
    bus: dict[str, Any] = {"url": url, "pid": os.getpid(), "started_at": time.time(), "secure": secure}
    if secure:
        bus["credentials"] = str(stack.credentials_file("cli"))
        bus["viewer_credentials"] = str(stack.credentials_file("viewer"))
    bus_file(state_dir).write_text(json.dumps(bus))
    print(f"esper: bus at {url}; services: {', '.join(SERVICE_NAMES)}" + (" (secure)" if secure else ""), flush=True)
    try:
        await stop.wait()
    finally:
        print("esper: stopping services", flush=True)
        await stack.stop()
        with contextlib.suppress(FileNotFoundError):
            bus_file(state_dir).unlink()


def up(state_dir: Path, nats_port: int | None = None, timeout: float = 120.0, secure: bool = False) -> str:
    """Start the supervisor detached, wait until all five services answer discovery, return the bus URL.

    With `secure`, the server enforces the users and permissions of operator/security.py; the operator's
    credentials are in the file that `bus.json` names under "credentials".
    """
    existing = read_bus(state_dir)
    if existing and _alive(int(existing["pid"])):
        return str(existing["url"])
    if nats_port is not None and not port_is_free(nats_port):
        raise PortInUse.found_at("127.0.0.1", nats_port)
    state_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "services.operator.cli", "up", "--foreground", "--state-dir", str(state_dir)]
    if nats_port is not None:
        argv += ["--nats-port", str(nats_port)]
    if secure:
        argv.append("--secure")
    with open(state_dir / "esper.log", "ab") as log_file:
        process = subprocess.Popen(
            argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    while (bus := read_bus(state_dir)) is None or int(bus["pid"]) != process.pid:
        if process.poll() is not None:
            raise RuntimeError(
                f"esper up failed (exit {process.returncode}): {_last_error(state_dir / 'esper.log')}; "
                f"see {state_dir / 'esper.log'}"
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"the bus did not come up in {timeout:.0f}s; see {state_dir / 'esper.log'}")
        time.sleep(0.1)
    url = str(bus["url"])

    async def ready() -> None:
        login = {key.removeprefix("ESPER_").lower(): value for key, value in credentials(bus).items()}
        nc = await connect(RuntimeSettings.from_env({"service": "cli", "nats_url": url, **login}))
        try:
            await wait_for_services(nc, list(SERVICE_NAMES), timeout=max(1.0, deadline - time.monotonic()))
        finally:
            await nc.close()

    try:
        asyncio.run(ready())
    except BaseException:
        # A stack that never became ready is not left running in the background.
        down(state_dir)
        raise
    return url


def _last_error(log_path: Path) -> str:
    """The supervisor's last `esper: error:` line in its log (what made it exit), else a pointer to the log."""
    lines = log_path.read_text(errors="replace").splitlines() if log_path.exists() else []
    errors = [line.removeprefix("esper: error: ") for line in lines if line.startswith("esper: error: ")]
    return errors[-1] if errors else "no error line"


def down(state_dir: Path, timeout: float = 60.0) -> bool:
    """Stop a stack started by `esper up`; False when none was running."""
    bus = read_bus(state_dir)
    if bus is None or not _alive(int(bus["pid"])):
        with contextlib.suppress(FileNotFoundError):
            bus_file(state_dir).unlink()
        return False
    pid = int(bus["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)
    return True
