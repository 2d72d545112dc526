"""The NATS users of services/operator/security.py on a real nats-server: clients without valid credentials are
refused, and each user is refused every publish and subscription outside its permissions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError

import leyline_schemas as L
from services.operator import security
from services.operator.embedded import EmbeddedNats, free_port, start_nats
from services.runtime import jetstream
from services.runtime.bus import BusUnavailable, connect, settle
from services.runtime.settings import RuntimeSettings

REPO = Path(__file__).resolve().parents[2]
STEPS = L.subjects.steps_subject("perm-run")
VIOLATION = "permissions violation for"


@pytest.fixture(scope="module")
def passwords() -> dict[str, str]:
    return security.generate_passwords()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, passwords: dict[str, str]) -> Iterator[EmbeddedNats]:
    state = tmp_path_factory.mktemp("secure-nats")
    auth = state / "auth.conf"
    auth.write_text(security.render_authorization())
    running = start_nats(state, port=free_port(), include=auth, env=security.server_environment(passwords))
    try:
        yield running
    finally:
        running.stop()


def settings(server: EmbeddedNats, user: str = "", password: str = "") -> RuntimeSettings:
    overrides = {"service": f"test-{user or 'anonymous'}", "nats_url": server.url}
    return RuntimeSettings.from_env({**overrides, "nats_user": user, "nats_password": password}, environ={})


@pytest.fixture
async def as_user(server: EmbeddedNats, passwords: dict[str, str]) -> AsyncIterator[dict[str, Client]]:
    """One connection per user of the permissions table, after the operator bootstrapped the streams."""
    clients: dict[str, Client] = {}
    cli = await connect(settings(server, "cli", passwords["cli"]))
    await jetstream.bootstrap(cli.jetstream())
    clients["cli"] = cli
    for user in security.USERS:
        if user != "cli":
            clients[user] = await connect(settings(server, user, passwords[user]))
    try:
        yield clients
    finally:
        for client in clients.values():
            await client.close()


def violations(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if VIOLATION in r.getMessage()]


async def refused(caplog: pytest.LogCaptureFixture, subject: str, verb: str = "publish") -> None:
    """The server reported a violation for `subject` to the client (it arrives asynchronously)."""
    for _ in range(50):
        if any(f'{verb} to "{subject}"'.lower() in message.lower() for message in violations(caplog)):
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"no {verb} violation for {subject}; saw {violations(caplog)}")


def test_the_committed_permissions_file_is_the_rendered_one() -> None:
    committed = (REPO / "deploy" / "nats" / "auth.conf").read_text()
    assert committed == security.render_authorization(), "run: python -m services.operator.security auth-conf"


async def test_clients_without_valid_credentials_are_refused(server: EmbeddedNats, passwords: dict[str, str]) -> None:
    with pytest.raises(BusUnavailable, match="refused an anonymous client"):
        await connect(settings(server))
    with pytest.raises(BusUnavailable, match="refused user 'tolaria'"):
        await connect(settings(server, "tolaria", passwords["simic"]))
    with pytest.raises(BusUnavailable, match="refused user 'intruder'"):
        await connect(settings(server, "intruder", "Xnothing"))


@pytest.mark.parametrize("user", ["kasmina", "tamiyo", "simic", "karn", "cli", "viewer"])
async def test_only_tolaria_writes_step_records(
    as_user: dict[str, Client], user: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "esper.bus")
    subject = L.subjects.steps_subject(f"perm-{user}")
    forger = as_user[user].jetstream(timeout=0.5)
    with pytest.raises((NatsError, TimeoutError)):
        await forger.publish(subject, b"forged", headers={"Nats-Msg-Id": f"forged-{user}"})
    await refused(caplog, subject)
    await as_user["tolaria"].jetstream().publish(subject, b"real", headers={"Nats-Msg-Id": f"real-{user}"})
    info = await as_user["cli"].jetstream().stream_info(L.subjects.STEPS_STREAM, subjects_filter=subject)
    assert (info.state.subjects or {}) == {subject: 1}, "a forged step record was stored"


@pytest.mark.parametrize("user", ["tolaria", "kasmina", "tamiyo", "karn", "viewer"])
async def test_only_simic_and_the_operator_write_policy_pointers(
    as_user: dict[str, Client], user: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "esper.bus")
    key = L.subjects.policy_key(f"forged-{user}")
    policies = await as_user[user].jetstream(timeout=0.5).key_value(L.subjects.POLICIES_BUCKET)
    with pytest.raises((NatsError, TimeoutError)):
        await policies.put(key, b"forged")
    await refused(caplog, f"$KV.{L.subjects.POLICIES_BUCKET}.{key}")
    for writer in ("simic", "cli"):
        bucket = await as_user[writer].jetstream().key_value(L.subjects.POLICIES_BUCKET)
        assert await bucket.put(L.subjects.policy_key(f"real-{writer}"), b"pointer") > 0


@pytest.mark.parametrize("user", ["tolaria", "kasmina", "tamiyo", "karn", "cli", "viewer"])
async def test_only_simic_writes_weights(
    as_user: dict[str, Client], user: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "esper.bus")
    store = await as_user[user].jetstream(timeout=0.5).object_store(L.subjects.WEIGHTS_STORE)
    with pytest.raises((NatsError, TimeoutError)):
        await store.put(f"forged-{user}.safetensors", b"\x00" * 64)
    assert any(f'publish to "$o.{L.subjects.WEIGHTS_STORE.lower()}.' in m.lower() for m in violations(caplog))
    simic_store = await as_user["simic"].jetstream().object_store(L.subjects.WEIGHTS_STORE)
    await simic_store.put(f"real-{user}.safetensors", b"\x01" * 64)
    with pytest.raises(NotFoundError):
        await simic_store.get_info(f"forged-{user}.safetensors")


@pytest.mark.parametrize("user", ["kasmina", "tamiyo", "simic", "karn", "cli", "viewer"])
async def test_only_tolaria_writes_host_checkpoints(
    as_user: dict[str, Client], user: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "esper.bus")
    name = L.subjects.host_checkpoint_object(f"forged-{user}", 0)
    store = await as_user[user].jetstream(timeout=0.5).object_store(L.subjects.HOSTS_STORE)
    with pytest.raises((NatsError, TimeoutError)):
        await store.put(name, b"\x00" * 64)
    assert any(f'publish to "$o.{L.subjects.HOSTS_STORE.lower()}.' in m.lower() for m in violations(caplog))
    tolaria_store = await as_user["tolaria"].jetstream().object_store(L.subjects.HOSTS_STORE)
    real = L.subjects.host_checkpoint_object(f"real-{user}", 0)
    await tolaria_store.put(real, b"\x01" * 64)
    await tolaria_store.delete(real)  # and it removes them (garbage collection)
    with pytest.raises(NotFoundError):
        await tolaria_store.get_info(name)


async def test_run_state_and_step_requests_belong_to_tolaria(
    as_user: dict[str, Client], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "esper.bus")
    for user in ("karn", "simic", "viewer"):
        runs = await as_user[user].jetstream(timeout=0.5).key_value(L.subjects.RUNS_BUCKET)
        with pytest.raises((NatsError, TimeoutError)):
            await runs.put(L.subjects.run_status_key("forged"), b"x")
    await refused(caplog, f"$KV.{L.subjects.RUNS_BUCKET}.{L.subjects.run_status_key('forged')}")
    for user, subject in (("tamiyo", L.subjects.KASMINA_STEP), ("viewer", L.subjects.RUNS_START)):
        await as_user[user].publish(subject, b"x")
        await settle(as_user[user])
        await refused(caplog, subject)


async def test_no_service_deletes_or_purges_a_stream(
    as_user: dict[str, Client], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "esper.bus")
    for user in ("tolaria", "simic", "karn", "viewer"):
        js = as_user[user].jetstream(timeout=0.5)
        with pytest.raises((NatsError, TimeoutError)):
            await js.delete_stream(L.subjects.STEPS_STREAM)
        with pytest.raises((NatsError, TimeoutError)):
            await js.purge_stream(L.subjects.TELEMETRY_STREAM)
    await refused(caplog, f"$JS.API.STREAM.DELETE.{L.subjects.STEPS_STREAM}")
    await refused(caplog, f"$JS.API.STREAM.PURGE.{L.subjects.TELEMETRY_STREAM}")
    assert (await as_user["cli"].jetstream().stream_info(L.subjects.STEPS_STREAM)).config.name == "STEPS"


async def test_replies_reach_only_the_requester(as_user: dict[str, Client], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "esper.bus")

    async def answer(msg: object) -> None:
        await msg.respond(b"decision")  # type: ignore[attr-defined]

    await as_user["tamiyo"].subscribe(L.subjects.TAMIYO_DECIDE, queue="esper", cb=answer)
    await settle(as_user["tamiyo"])
    # Kasmina asks Tamiyo: the reply comes back to Kasmina's own inbox, answered under allow_responses.
    reply = await as_user["kasmina"].request(L.subjects.TAMIYO_DECIDE, b"observation", timeout=5)
    assert reply.data == b"decision" and reply.subject.startswith("_INBOX.kasmina.")
    # Nobody else may read Kasmina's inbox, nor write to an inbox it was not asked to answer.
    await as_user["tamiyo"].subscribe("_INBOX.kasmina.>")
    await settle(as_user["tamiyo"])
    await refused(caplog, "_INBOX.kasmina.>", "subscription")
    await as_user["tamiyo"].publish("_INBOX.tolaria.spoofed", b"forged reply")
    await settle(as_user["tamiyo"])
    await refused(caplog, "_INBOX.tolaria.spoofed")
    # A reply to a request the server no longer knows of (it restarted meanwhile) still reaches its caller: the
    # answerer may write to its own callers' inboxes.
    late = await as_user["kasmina"].subscribe("_INBOX.kasmina.late")
    await settle(as_user["kasmina"])
    await as_user["tamiyo"].publish("_INBOX.kasmina.late", b"late decision")
    assert (await late.next_msg(timeout=5)).data == b"late decision"
    await as_user["kasmina"].subscribe(STEPS)
    await settle(as_user["kasmina"])
    await refused(caplog, STEPS, "subscription")
