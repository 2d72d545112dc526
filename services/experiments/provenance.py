"""What produced a result: the exact command and the versions (python, torch, esper commit), for every report."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

SECRET_PARTS = ("PASSWORD", "CREDS", "TOKEN", "TLS_KEY", "USER")


def _settings_from_environment() -> list[str]:
    """`ESPER_*=value` for every setting taken from the environment, secrets left out, in a stable order."""
    return [
        f"{key}={value}"
        for key, value in sorted(os.environ.items())
        if key.startswith("ESPER_") and not any(part in key for part in SECRET_PARTS)
    ]


def provenance(command: Sequence[str] | None = None) -> dict[str, str]:
    """The exact command and the versions (python, torch, esper commit) that produced a result."""
    import torch

    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", False
    argv = list(command if command is not None else sys.argv)
    if argv and argv[0].endswith("esper"):
        argv[0] = "esper"
    # Settings taken from the environment are part of the command: a report must say every knob it ran with.
    argv = _settings_from_environment() + argv
    return {
        "command": " ".join(argv),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "esper_commit": commit + (" (working tree had uncommitted changes)" if dirty else ""),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "load": _machine_load(),
    }


def _machine_load() -> str:
    """Uptime and the 1/5/15-minute load averages when the run began: how busy the machine was."""
    try:
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        one, five, fifteen = os.getloadavg()
    except (OSError, ValueError, IndexError):
        return "unknown"
    return f"up {uptime / 60:.0f} min, load {one:.2f} / {five:.2f} / {fifteen:.2f}"


def provenance_markdown(info: dict[str, str]) -> str:
    return "\n".join(
        [
            "## Reproduce",
            "",
            "```",
            info["command"],
            "```",
            "",
            f"python {info['python']}, torch {info['torch']}, esper commit `{info['esper_commit']}`, "
            f"{info['machine']}, {info['date_utc']} UTC" + (f", {info['load']}." if info.get("load") else "."),
        ]
    )
