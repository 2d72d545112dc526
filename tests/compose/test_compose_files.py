"""compose.yaml, compose.gpu.yaml, the Dockerfile and the NATS configs agree with the Compose Specification, the
`esper` command line, the settings and the security model (no Docker engine needed)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from services.operator import security
from services.operator.cli import build_parser
from services.operator.embedded import DEFAULT_MAX_PAYLOAD
from tests.compose.compose_model import (
    COMPOSE,
    COMPOSE_CLUSTER,
    COMPOSE_GPU,
    REPO,
    InterpolationError,
    dockerfile_args,
    dot_env,
    environment,
    esper_services,
    load,
    merge,
    settings_names,
    vendor_dir,
)

NATS_DIR = REPO / "deploy" / "nats"
GPU_SERVICES = ("tolaria", "simic", "tamiyo")


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    path = vendor_dir() / "compose-spec.json"
    if not path.exists():
        pytest.skip(f"the Compose Specification schema is not at {path} (set ESPER_SHARED_VENDOR)")
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load(COMPOSE, dot_env())


@pytest.fixture(scope="module")
def with_gpus(compose: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = merge(compose, load(COMPOSE_GPU, dot_env()))
    return merged


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_GPU, COMPOSE_CLUSTER], ids=lambda p: p.name)
def test_the_files_follow_the_compose_specification(schema: dict[str, Any], path: Path) -> None:
    found = jsonschema.Draft7Validator(schema).iter_errors(load(path, dot_env()))
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in found]
    assert not errors, "\n".join(errors)


def test_the_schema_check_catches_a_mistake(schema: dict[str, Any], compose: dict[str, Any]) -> None:
    broken = merge(compose, {"services": {"tolaria": {"comand": ["esper"]}}})
    assert not jsonschema.Draft7Validator(schema).is_valid(broken)


def test_compose_refuses_to_start_without_passwords() -> None:
    with pytest.raises(InterpolationError, match="NATS_PASSWORD"):
        load(COMPOSE, {})


def documented_commands() -> list[tuple[str, list[str]]]:
    """`docker compose run --rm SERVICE esper ...` lines of compose.yaml's header comment."""
    found = []
    for line in COMPOSE.read_text().splitlines():
        match = re.match(r"#\s+docker compose run --rm (\S+) (esper .*?)(?:\s{2,}.*)?$", line)
        if match:
            found.append((match.group(1), shlex.split(match.group(2))))
    return found


def test_every_command_is_a_real_esper_subcommand(compose: dict[str, Any]) -> None:
    commands = [(name, s["command"]) for name, s in esper_services(compose).items()] + documented_commands()
    assert {"kasmina", "tamiyo", "simic", "tolaria", "karn"} <= {name for name, _ in commands}
    assert any(cmd[1] == "run" for _, cmd in documented_commands()) and any(
        cmd == ["esper", "karn"] for _, cmd in documented_commands()
    ), "the header documents starting a run and attaching the TUI"
    parser = build_parser()
    for name, command in commands:
        assert command[0] == "esper"
        try:
            parser.parse_args(command[1:])
        except SystemExit:
            pytest.fail(f"{name}: `{' '.join(command)}` is not an esper command")
    for service in ("kasmina", "tamiyo", "simic", "tolaria", "karn"):
        assert compose["services"][service]["command"] == ["esper", "service", service]


@pytest.mark.parametrize("gpu", [False, True], ids=["cpu", "gpu"])
def test_every_esper_variable_is_read_by_the_settings(
    compose: dict[str, Any], with_gpus: dict[str, Any], gpu: bool
) -> None:
    for name, service in esper_services(with_gpus if gpu else compose).items():
        unread = {key for key in environment(service) if key.startswith("ESPER_")} - settings_names(service["command"])
        assert not unread, f"{name} sets variables its settings never read: {sorted(unread)}"


def test_services_scale_without_fixed_names_or_host_ports(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert "container_name" not in service, f"{name} has a fixed container name: it could not be scaled"
    assert "ports" not in compose["services"]["tolaria"]
    published = [p for s in compose["services"].values() for p in s.get("ports", [])]
    assert all(str(p).startswith("127.0.0.1:") for p in published), f"ports published beyond loopback: {published}"


def test_health_checks_ask_healthz_on_each_admin_port(compose: dict[str, Any]) -> None:
    for name, service in esper_services(compose, with_profiles=False).items():
        command, env = service["command"], environment(service)
        port = env.get("ESPER_ADMIN_PORT") or command[command.index("--port") + 1]
        test = " ".join(service["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/healthz" in test, f"{name}: {test}"
        if command[1] == "service":
            assert env["ESPER_ADMIN_HOST"] == "0.0.0.0", f"{name}: the admin port must be reachable from outside"
    nats = compose["services"]["nats"]
    http_port = re.search(r'^http: "[^:]+:(\d+)"', (NATS_DIR / "nats-server.conf").read_text(), re.M)
    assert http_port and f"http://127.0.0.1:{http_port.group(1)}/healthz" in " ".join(nats["healthcheck"]["test"])
    for service in esper_services(compose, with_profiles=False).values():
        if service["command"][1] == "service":
            assert service["depends_on"]["nats"]["condition"] == "service_healthy"


def test_jetstream_and_the_run_store_live_on_named_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"jetstream", "runs"} <= set(compose["volumes"])
    nats = services["nats"]
    store_dir = nats["command"][nats["command"].index("--store_dir") + 1]
    assert f"jetstream:{store_dir}" in nats["volumes"]
    for name in ("karn", "karn-api"):
        store = environment(services[name])["ESPER_STORE_PATH"]
        mounts = [v.split(":", 1)[1] for v in services[name]["volumes"] if v.startswith("runs:")]
        assert any(store.startswith(mount + "/") for mount in mounts), f"{name}'s store is not on the runs volume"


def test_credentials_come_from_the_environment_only(compose: dict[str, Any]) -> None:
    raw = load(COMPOSE)
    users = set()
    for name, service in esper_services(raw).items():
        env = environment(service)
        if "ESPER_NATS_USER" not in env:
            assert not any(k.startswith("ESPER_NATS") for k in env if k != "ESPER_NATS_URL"), name
            continue
        user = env["ESPER_NATS_USER"]
        users.add(user)
        assert user in security.USERS, f"{name} connects as {user}, who has no permissions"
        expected = security.password_variable(user)
        assert re.fullmatch(rf"\$\{{{expected}:\?[^}}]+\}}", env["ESPER_NATS_PASSWORD"]), (name, expected)
    assert users >= set(security.SERVICE_USERS) | {"cli"}
    nats_env = environment(raw["services"]["nats"])
    assert set(nats_env) == {security.password_variable(user) for user in security.USERS}
    dockerfile = (REPO / "Dockerfile").read_text()
    assert not re.search(r"^\s*(ENV|ARG)\b.*(PASSWORD|SECRET|TOKEN|CREDS)", dockerfile, re.M | re.I)
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".env", "*.env", "**/*.key", "**/*.pem"} <= set(ignored)


def test_the_nats_config_includes_the_permissions_and_the_payload_limit(compose: dict[str, Any]) -> None:
    config = (NATS_DIR / "nats-server.conf").read_text()
    assert re.search(rf"^max_payload: {DEFAULT_MAX_PAYLOAD}$", config, re.M)
    assert re.search(r'^include "auth.conf"$', config, re.M)
    assert (NATS_DIR / "auth.conf").read_text() == security.render_authorization()
    nats = compose["services"]["nats"]
    config_path = nats["command"][nats["command"].index("--config") + 1]
    assert f"./deploy/nats:{Path(config_path).parent}:ro" in nats["volumes"]


def test_the_gpu_overlay_reserves_gpus_for_the_tensor_services(with_gpus: dict[str, Any]) -> None:
    overlay = load(COMPOSE_GPU, dot_env())
    assert set(overlay["services"]) == set(GPU_SERVICES)
    for name in GPU_SERVICES:
        service = with_gpus["services"][name]
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert any("gpu" in d["capabilities"] and d["driver"] == "nvidia" for d in devices), name
        assert environment(service)["ESPER_DEVICE"] == "cuda"
        assert service["command"] == ["esper", "service", name], "the overlay keeps the base command"
        assert set(service["build"]["args"]) <= dockerfile_args()
        assert "cu" in service["build"]["args"]["TORCH_INDEX_URL"].rsplit("/", 1)[-1]
    for name in ("kasmina", "karn"):
        assert "deploy" not in with_gpus["services"][name]


def test_the_image_builds_cpu_torch_by_default() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert {"BASE_IMAGE", "TORCH_INDEX_URL"} <= dockerfile_args()
    assert re.search(r"^ARG TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cpu$", dockerfile, re.M)
    assert re.search(r"^ARG BASE_IMAGE=python:3\.\d+-slim", dockerfile, re.M)
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.M), "services run as an unprivileged user"
    for source in re.findall(r"^COPY (\S+)", dockerfile, re.M):
        assert (REPO / source).exists(), f"COPY {source}: no such file in the repository"


def test_the_cluster_overlay_gives_every_service_three_routed_nodes_and_three_replicas(
    compose: dict[str, Any],
) -> None:
    merged = merge(compose, load(COMPOSE_CLUSTER, dot_env()))
    nodes = ["nats", "nats-2", "nats-3"]
    for node in nodes:
        command = merged["services"][node]["command"]
        routes = command[command.index("--routes") + 1].split(",")
        assert sorted(routes) == sorted(f"nats://{other}:6222" for other in nodes if other != node), (node, routes)
        assert command[command.index("--cluster_name") + 1] == "esper"
        assert set(merged["services"][node]["environment"]) == set(compose["services"]["nats"]["environment"])
    names = [c[c.index("--name") + 1] for c in (merged["services"][n]["command"] for n in nodes)]
    assert len(set(names)) == 3, "every node has its own server name (JetStream clustering needs it)"
    for name, service in esper_services(merged).items():
        env = environment(service)
        if name == "karn-api":
            continue  # reads the run store only
        assert env["ESPER_NATS_URL"].split(",") == [f"nats://{n}:4222" for n in nodes], name
        assert env["ESPER_STREAM_REPLICAS"] == "3", name
        unread = {key for key in env if key.startswith("ESPER_")} - settings_names(service["command"])
        assert not unread, f"{name} sets variables its settings never read: {sorted(unread)}"
