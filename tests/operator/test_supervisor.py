"""The supervisor restarts a child that dies, prefixes its lines, and stops everything on request."""

from __future__ import annotations

import asyncio
import sys

from services.operator.supervisor import ChildSpec, Supervisor


def test_dead_child_is_restarted_and_lines_are_prefixed() -> None:
    asyncio.run(_restart())


async def _restart() -> None:
    lines: list[str] = []
    flaky = ChildSpec("flaky", [sys.executable, "-c", "print('hello', flush=True); raise SystemExit(3)"])
    steady = ChildSpec("steady", [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"])
    supervisor = Supervisor([flaky, steady], output=lines.append, min_backoff=0.05, max_backoff=0.1)
    await supervisor.start()
    for _ in range(200):
        if supervisor.children["flaky"].restarts >= 2 and any("up" in line for line in lines):
            break
        await asyncio.sleep(0.05)
    steady_pid = supervisor.pid("steady")
    await supervisor.stop(timeout=5)
    assert supervisor.children["flaky"].restarts >= 2
    assert sum(1 for line in lines if line.startswith("[flaky ] hello")) >= 2
    assert any("exited with code 3" in line for line in lines)
    assert any(line.startswith("[steady] up") for line in lines)
    assert supervisor.children["steady"].restarts == 0 and steady_pid is not None
    assert supervisor.pid("steady") is None, "stop() must end every child"


def test_children_die_with_a_supervisor_that_is_killed_outright(tmp_path: object) -> None:
    """A supervisor killed by SIGKILL (or a timeout) must not leave its services behind to join another bus."""
    import os
    import signal
    import subprocess
    import time
    from pathlib import Path

    pid_file = Path(str(tmp_path)) / "child.pid"
    sleeper = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    script = f"""
import asyncio, sys
from services.operator.supervisor import ChildSpec, Supervisor
child = ChildSpec("sleeper", [sys.executable, "-c", {sleeper!r}])
async def main():
    supervisor = Supervisor([child])
    await supervisor.start()
    await asyncio.sleep(120)
asyncio.run(main())
"""
    parent = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the supervised child never started"
        time.sleep(0.1)
    child_pid = int(pid_file.read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while True:
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, f"child {child_pid} outlived its supervisor"
        time.sleep(0.1)
