"""Print the runtime part of requirements.lock: what the image installs, without the dev tools.

requirements.lock pins every package of `pip install -e '.[dev]'` (pip-compile writes it; `make lock`). An image
needs only the packages that Esper's own `[project] dependencies` reach. pip-compile annotates every pin with the
packages that need it (`# via a`, or `# via` then `#   a` lines), so the runtime set is the closure of those edges
from the runtime requirements and torch (which the lock leaves to constraints.txt but whose requirements it pins).
Each pin is printed whole, hashes included, so `pip install --require-hashes` checks them as before.

Standard library only: it runs in the image before anything is installed.
    python3 runtime_lock.py requirements.lock pyproject.toml > runtime.lock
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
#: Requirements that the lock leaves out but whose own requirements it pins.
UNPINNED_ROOTS = ("torch",)


def canonical(name: str) -> str:
    """The PEP 503 normal form of a project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(text: str) -> tuple[dict[str, str], dict[str, set[str]]]:
    """The lock's pins (name → the pin's whole text) and, for each, the names of the packages that need it."""
    blocks: dict[str, list[str]] = {}
    parents: dict[str, set[str]] = {}
    current: str | None = None
    in_via_list = False
    for line in text.splitlines():
        pin = _PIN.match(line)
        if pin:
            current = canonical(pin.group(1))
            blocks[current] = [line]
            parents[current] = set()
            in_via_list = False
            continue
        if current is None:
            continue
        stripped = line.strip()
        if not line.startswith(" "):  # a blank line or a top-level comment ends the pin's block
            current = None
            continue
        if stripped.startswith("--hash") or stripped.endswith("\\"):
            blocks[current].append(line)
        elif stripped == "# via":
            in_via_list = True
        elif stripped.startswith("# via "):
            parents[current].add(_parent(stripped.removeprefix("# via ")))
        elif in_via_list and stripped.startswith("#   "):
            parents[current].add(_parent(stripped.removeprefix("#   ")))
    return {name: "\n".join(lines) for name, lines in blocks.items()}, parents


def _parent(annotation: str) -> str:
    """`esper (pyproject.toml)` → `esper`; `-c constraints.txt` → `-c`."""
    match = _NAME.match(annotation)
    return canonical(match.group(1)) if match else annotation.strip()


def runtime_requirements(pyproject: str) -> set[str]:
    """The names of `[project] dependencies`."""
    dependencies = tomllib.loads(pyproject)["project"]["dependencies"]
    return {canonical(_NAME.match(requirement).group(1)) for requirement in dependencies}  # type: ignore[union-attr]


def runtime_closure(pins: dict[str, str], parents: dict[str, set[str]], roots: set[str]) -> list[str]:
    """The pinned packages reachable from ``roots``, in the lock's order."""
    needed = set(roots) | set(UNPINNED_ROOTS)
    changed = True
    while changed:
        changed = False
        for name, needed_by in parents.items():
            if name not in needed and needed_by & needed:
                needed.add(name)
                changed = True
    missing = sorted(name for name in roots if name not in pins and name not in UNPINNED_ROOTS)
    if missing:
        raise SystemExit(f"runtime requirements missing from the lock (run `make lock`): {', '.join(missing)}")
    return [name for name in pins if name in needed]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    pins, parents = parse_lock(Path(argv[0]).read_text())
    roots = runtime_requirements(Path(argv[1]).read_text())
    for name in runtime_closure(pins, parents, roots):
        print(pins[name])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
