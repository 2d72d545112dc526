"""ARCHITECTURE.md §3, enforced: which package may import which, read from every import statement in the tree.

Lazy imports inside functions count: a function-level `import` is an edge like any other. A package under
`services/` that the table below does not declare fails the test, so a new package says what it is before it lands.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SERVICES = frozenset({"kasmina", "tamiyo", "simic", "tolaria", "karn"})
#: Code more than one service needs, in a package of its own; it imports no service.
SHARED_LIBRARIES = frozenset({"policy", "observation"})
#: The harness every service shares; it imports no service, no shared library and no tooling.
HARNESS = "runtime"
#: Operator tooling and experiment drivers: they start and call services, and may import anything.
TOOLING = frozenset({"operator", "experiments"})
#: The one lent library: Tolaria runs seeds in its own process through Kasmina's mechanics (and its lifecycle
#: surface, `services.kasmina.mechanics.lifecycle`).
LENT = {"tolaria": "services.kasmina.mechanics"}
HEAVY = frozenset({"torch", "numpy"})


@dataclass(frozen=True)
class Edge:
    source: str  # the importing module's path, relative to the root
    line: int
    module: str  # the imported module, dotted


def package_of(module: str) -> str:
    """`leyline_schemas`, `services` (the root package) or `services.<name>`; anything else is third-party."""
    parts = module.split(".")
    if parts[0] == "leyline_schemas":
        return "leyline_schemas"
    if parts[0] == "services":
        return "services" if len(parts) == 1 else f"services.{parts[1]}"
    return parts[0]


def edges(root: Path) -> Iterator[tuple[str, Edge]]:
    """(importing package, edge) for every absolute import in services/ and leyline_schemas/."""
    for path in sorted([*root.glob("services/**/*.py"), *root.glob("leyline_schemas/**/*.py")]):
        rel = path.relative_to(root)
        parts = rel.with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if len(parts) == 2 and parts[0] == "services":
            module = f"services.{parts[1]}" if parts[1] != "__init__" else "services"
        tree = ast.parse(path.read_text(), str(rel))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                yield package_of(module), Edge(str(rel), node.lineno, name)


def refusal(source: str, module: str) -> str | None:
    """Why `source` (a package) may not import `module`, or None when §3 allows it."""
    target = package_of(module)
    if target == source:
        return None
    if source == "leyline_schemas":
        top = module.split(".")[0]
        return "the contracts import nothing but msgspec and the stdlib" if top in {"services", *HEAVY} else None
    if not target.startswith("services") or target == "leyline_schemas":
        return None  # the contracts, the stdlib and third-party libraries
    if target == "services":
        return None  # the root package: only its version
    name = source.removeprefix("services.")
    target_name = target.removeprefix("services.")
    if name in TOOLING:
        return None
    if name == HARNESS:
        return "the harness imports no service, shared library or tooling"
    if target_name in TOOLING:
        return "nothing but tooling imports the operator tooling or the experiment drivers"
    if name in SHARED_LIBRARIES:
        if target_name == HARNESS or target_name in SHARED_LIBRARIES:
            return None
        return "a shared library imports no service"
    if name in SERVICES:
        if target_name == HARNESS or target_name in SHARED_LIBRARIES:
            return None
        lent = LENT.get(name)
        if lent and (module == lent or module.startswith(lent + ".")):
            return None
        return "no service imports another (Tolaria → kasmina.mechanics is the one exception)"
    return None


def declared(package: str) -> bool:
    name = package.removeprefix("services.")
    return package in ("services", "leyline_schemas") or name in SERVICES | SHARED_LIBRARIES | TOOLING | {HARNESS}


def violations(root: Path) -> list[str]:
    found = []
    for source, edge in edges(root):
        if not declared(source):
            found.append(f"{edge.source}: package {source} is not declared in tests/architecture/test_import_graph.py")
            continue
        reason = refusal(source, edge.module)
        if reason:
            found.append(f"{edge.source}:{edge.line} {source} -> {edge.module}: {reason}")
    return sorted(set(found))


def test_the_tree_has_no_import_the_architecture_refuses() -> None:
    assert violations(ROOT) == []


def test_every_service_and_library_is_present() -> None:
    present = {p.name for p in (ROOT / "services").iterdir() if (p / "__init__.py").exists()}
    assert present == SERVICES | SHARED_LIBRARIES | TOOLING | {HARNESS}


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("rel", "code", "why"),
    [
        ("services/simic/a.py", "from services.tamiyo.network import X\n", "no service imports another"),
        ("services/tamiyo/a.py", "def f():\n    import services.kasmina.masks\n", "no service imports another"),
        ("services/tolaria/a.py", "from services.kasmina.transitions import prune_state\n", "no service imports"),
        ("services/runtime/a.py", "from services.tolaria.tasks import get_task\n", "the harness imports no service"),
        ("services/runtime/b.py", "from services.operator.up import bus_url\n", "the harness imports no service"),
        ("services/policy/a.py", "from services.kasmina.masks import compute_masks\n", "a shared library imports"),
        ("services/karn/a.py", "from services.operator.up import bus_url\n", "nothing but tooling imports"),
        ("leyline_schemas/a.py", "import torch\n", "the contracts import nothing"),
        ("services/newthing/a.py", "import json\n", "is not declared"),
    ],
)
def test_a_refused_import_is_reported(tmp_path: Path, rel: str, code: str, why: str) -> None:
    found = violations(_tree(tmp_path, {rel: code}))
    assert len(found) == 1 and why in found[0], found


@pytest.mark.parametrize(
    ("rel", "code"),
    [
        ("services/tolaria/a.py", "from services.kasmina.mechanics.lifecycle import governor_prune\n"),
        ("services/simic/a.py", "from services.policy.network import X\nfrom services.runtime.bus import Y\n"),
        ("services/tamiyo/a.py", "from leyline_schemas.heads import head_sizes\nimport torch\n"),
        ("services/operator/a.py", "from services.simic.learner import ArmLearner\n"),
        ("services/experiments/a.py", "from services.operator.run_client import bus_session\n"),
        ("services/observation/a.py", "from leyline_schemas.observation import observation_size\n"),
    ],
)
def test_an_allowed_import_passes(tmp_path: Path, rel: str, code: str) -> None:
    assert violations(_tree(tmp_path, {rel: code})) == []
