"""TLS on a real nats-server with certificates made at test time (openssl): the services' settings connect with
mutual TLS; a client without a certificate, without TLS, or trusting another CA is refused."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import leyline_schemas as L
from leyline_schemas.routes import Route
from services.operator.embedded import EmbeddedNats, TlsFiles, free_port, render_config, start_nats
from services.runtime.bus import BusUnavailable, connect, request
from services.runtime.settings import RuntimeSettings

EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_ca(directory: Path, name: str) -> None:
    openssl(
        "req", "-x509", *EC, "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "1", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip


def make_leaf(directory: Path, ca: str, name: str, usage: str) -> None:
    """A certificate for 127.0.0.1/localhost signed by `ca`, for serverAuth or clientAuth."""
    (directory / f"{name}.ext").write_text(
        f"subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\nkeyUsage=critical,digitalSignature\n"
    )
    openssl("req", *EC, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory)
    openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
        "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext",
        cwd=directory,
    )  # fmt: skip


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is needed to make test certificates")
    directory = tmp_path_factory.mktemp("certs")
    make_ca(directory, "ca")
    make_ca(directory, "rogue-ca")
    make_leaf(directory, "ca", "server", "serverAuth")
    make_leaf(directory, "ca", "client", "clientAuth")
    return directory


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, certs: Path) -> Iterator[EmbeddedNats]:
    tls = TlsFiles(cert=certs / "server.pem", key=certs / "server.key", ca=certs / "ca.pem", verify=True)
    running = start_nats(tmp_path_factory.mktemp("tls-nats"), port=free_port(), tls=tls)
    try:
        yield running
    finally:
        running.stop()


def settings(url: str, **tls: str) -> RuntimeSettings:
    return RuntimeSettings.from_env({"service": "test", "nats_url": url, "connect_timeout": 2.0, **tls}, environ={})


def test_the_config_renders_a_tls_block(certs: Path) -> None:
    tls = TlsFiles(cert=certs / "server.pem", key=certs / "server.key", ca=certs / "ca.pem", verify=True)
    config = render_config(host="0.0.0.0", port=4222, store_dir=Path("/js"), tls=tls)
    block = config[config.index("tls {") :]
    assert f'cert_file: "{certs / "server.pem"}"' in block and f'ca_file: "{certs / "ca.pem"}"' in block
    assert "verify: true" in block


async def test_mutual_tls_connects_and_serves(server: EmbeddedNats, certs: Path) -> None:
    assert server.url.startswith("tls://")
    mutual = {
        "nats_tls_ca": str(certs / "ca.pem"),
        "nats_tls_cert": str(certs / "client.pem"),
        "nats_tls_key": str(certs / "client.key"),
    }
    nc = await connect(settings(server.url, **mutual))
    try:

        async def answer(msg: object) -> None:
            await msg.respond(L.encode(L.RunStatusRequest(run_id="over-tls")))  # type: ignore[attr-defined]

        await nc.subscribe("esper.v1.test.tls", cb=answer)
        echo = Route("esper.v1.test.tls", L.RunStatusRequest, L.RunStatusRequest)
        reply = await request(nc, echo, L.RunStatusRequest(run_id="ping"))
        assert reply.run_id == "over-tls"
        assert (await nc.jetstream().account_info()).streams == 0
    finally:
        await nc.close()


@pytest.mark.parametrize(
    "case",
    ["no client certificate", "no TLS at all", "trusts another CA"],
)
async def test_clients_that_fail_the_handshake_are_refused(server: EmbeddedNats, certs: Path, case: str) -> None:
    client_cert = {"nats_tls_cert": str(certs / "client.pem"), "nats_tls_key": str(certs / "client.key")}
    url = server.url
    if case == "no client certificate":
        tls = {"nats_tls_ca": str(certs / "ca.pem")}
    elif case == "no TLS at all":
        tls, url = {}, url.replace("tls://", "nats://")
    else:
        tls = {"nats_tls_ca": str(certs / "rogue-ca.pem"), **client_cert}
    with pytest.raises(BusUnavailable):
        nc = await connect(settings(url, **tls))
        await nc.close()
