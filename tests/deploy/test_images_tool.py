"""deploy/docker/images.py's pure parts: where debootstrap gets Debian, and when Esper's image is rebuilt."""

from __future__ import annotations

from pathlib import Path

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
