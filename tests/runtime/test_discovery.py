"""Discovery's `ready`: an instance answers `$SRV.INFO` as soon as it joins the bus, before its endpoints exist;
it counts as ready once every endpoint it announced is registered (what `esper status` and the waits rely on)."""

from __future__ import annotations

import nats
from nats.micro import ServiceConfig, add_service
from nats.micro.request import Request
from nats.micro.service import EndpointConfig

from services.runtime.bus import settle
from services.runtime.discovery import live_services, summarize


def info(announced: str | None, served: int) -> dict[str, object]:
    metadata = {"service": "tamiyo"} if announced is None else {"service": "tamiyo", "endpoints": announced}
    return {"name": "esper-tamiyo", "metadata": metadata, "endpoints": [{"subject": f"e.{i}"} for i in range(served)]}


def test_ready_counts_the_announced_endpoints() -> None:
    assert summarize(info("2", 1))["ready"] is False
    assert summarize(info("2", 2))["ready"] is True
    assert summarize(info("0", 0))["ready"] is True
    # A service from elsewhere that announces nothing, or nonsense, is taken as it is.
    assert summarize(info(None, 0))["ready"] is True
    assert summarize(info("many", 0))["ready"] is True


async def test_an_instance_is_ready_once_its_endpoints_are_registered(nats_url: str) -> None:
    service_nc = await nats.connect(nats_url)
    observer = await nats.connect(nats_url)

    async def answer(request: Request) -> None:
        await request.respond(b"ok")

    try:
        service = await add_service(
            service_nc,
            ServiceConfig(
                name="esper-discovery-probe", version="0.0.1", metadata={"service": "probe", "endpoints": "2"}
            ),
        )
        for subject in ("test.discovery.a", "test.discovery.b"):
            (probe,) = [s for s in await live_services(observer, timeout=0.3) if s["service"] == "probe"]
            assert probe["ready"] is False, probe
            await service.add_endpoint(EndpointConfig(name=subject.rsplit(".", 1)[1], subject=subject, handler=answer))
            await settle(service_nc)
        (probe,) = [s for s in await live_services(observer, timeout=0.3) if s["service"] == "probe"]
        assert probe["ready"] is True and probe["endpoints"] == ["test.discovery.a", "test.discovery.b"], probe
        await service.stop()
    finally:
        await observer.close()
        await service_nc.close()
