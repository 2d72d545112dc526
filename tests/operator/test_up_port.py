"""`esper up` owns its port or refuses it: never joins a bus it did not start (issue 15, item 3)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from services.operator import embedded
from services.operator.embedded import PortInUse, free_port, server_info, start_nats


def test_an_explicit_port_held_by_another_nats_server_is_refused_and_names_it(tmp_path: Path) -> None:
    other = start_nats(tmp_path / "other", port=free_port())
    try:
        with pytest.raises(PortInUse) as refused:
            start_nats(tmp_path / "ours", port=other.port)
        assert refused.value.holder == other.server_name
        assert f"port {other.port}" in str(refused.value)
        assert not (tmp_path / "ours" / "nats-server.conf").exists(), "nothing is started for a refused port"
    finally:
        other.stop()


def test_an_explicit_port_held_by_any_listener_is_refused(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(PortInUse) as refused:
            start_nats(tmp_path / "ours", port=port)
        assert refused.value.holder is None


def test_a_port_taken_between_the_check_and_the_bind_is_refused_not_joined(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the up-front check cannot close: our server fails to bind while another answers on the port. The
    answer carries the other server's name, so start_nats raises instead of handing back the other bus."""
    other = start_nats(tmp_path / "other", port=free_port())
    try:
        real_is_free = embedded.port_is_free
        checks = iter([True])  # the up-front check is fooled once; every later check is real

        def fooled_once(port: int, host: str = "127.0.0.1") -> bool:
            return next(checks, None) or real_is_free(port, host)

        monkeypatch.setattr(embedded, "port_is_free", fooled_once)
        with pytest.raises(PortInUse) as refused:
            start_nats(tmp_path / "ours", port=other.port)
        assert refused.value.holder == other.server_name
        info = server_info("127.0.0.1", other.port)
        assert info is not None and info["server_name"] == other.server_name, "the other bus is left as it was"
    finally:
        other.stop()


def test_without_a_port_a_state_dir_takes_its_last_port_again(tmp_path: Path) -> None:
    state = tmp_path / "nats"
    state.mkdir()
    remembered = free_port()
    (state / "port").write_text(f"{remembered}\n")
    first = start_nats(state)
    name = first.server_name
    first.stop()
    second = start_nats(state)
    try:
        assert first.port == second.port == remembered, "a client that knew the URL reconnects after a restart"
        assert second.server_name == name, "one state dir, one server name"
        info = server_info("127.0.0.1", second.port)
        assert info is not None and info["server_name"] == name
    finally:
        second.stop()


def test_a_remembered_port_now_taken_moves_the_bus_and_records_where(tmp_path: Path) -> None:
    state = tmp_path / "nats"
    state.mkdir()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        (state / "port").write_text(f"{taken}\n")
        server = start_nats(state)
        try:
            assert server.port != taken
            assert int((state / "port").read_text()) == server.port
        finally:
            server.stop()


def test_esper_up_on_a_port_in_use_exits_2_with_the_reason_and_starts_nothing(tmp_path: Path) -> None:
    other = start_nats(tmp_path / "other", port=free_port())
    state = tmp_path / "state"
    try:
        for foreground in ([], ["--foreground"]):
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "services.operator.cli",
                    "up",
                    *foreground,
                    "--state-dir",
                    str(state),
                    "--nats-port",
                    str(other.port),
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert result.returncode == 2, result.stderr
            assert f"esper: error: port {other.port} on 127.0.0.1 is in use by nats-server '{other.server_name}'" in (
                result.stderr
            )
            assert "Traceback" not in result.stderr
            assert not (state / "bus.json").exists(), "no bus is recorded for clients to find"
        assert server_info("127.0.0.1", other.port)["server_name"] == other.server_name  # type: ignore[index]
    finally:
        other.stop()
