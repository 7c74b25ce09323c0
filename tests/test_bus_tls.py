"""TLS between services and NATS (docs/reliability.md "TLS between services and NATS"), on real
nats-servers with a throwaway CA (tests/support/tls.py): a server whose client port requires
TLS serves a client that trusts its CA, refuses plain TCP and a client that does not trust the
CA; a real service process becomes ready over `tls://` with SWITCHYARD_NATS_TLS_CA_FILE; and a
3-node cluster forms over TLS routes and carries messages between nodes."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest

from switchyard import busauth
from switchyard.bus import connect
from switchyard.busauth import ADMIN, LEDGER, BusCredentials
from switchyard.natsserver import NatsServer
from switchyard.testing.stack import Stack, running
from tests.support.cluster import NatsCluster
from tests.support.tls import Certificates, make_certificates


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path / "certs")


@pytest.fixture
def tls_server(tmp_path: Path, certs: Certificates) -> Iterator[NatsServer]:
    server = NatsServer(
        store_dir=tmp_path / "nats", passwords=busauth.new_passwords(), client_role=ADMIN, tls=certs.server
    ).start()
    yield server
    server.stop()


def test_the_server_config_carries_tls_for_clients_and_routes_only_when_asked() -> None:
    passwords = busauth.new_passwords()
    cluster = busauth.ClusterSpec("c", "127.0.0.1:6250", ("127.0.0.1:6251",))
    plain = json.loads(busauth.server_config(passwords, cluster))
    assert "tls" not in plain and "tls" not in plain["cluster"]
    files = busauth.TlsFiles("/certs/server.pem", "/certs/server-key.pem", "/certs/ca.pem")
    config = json.loads(busauth.server_config(passwords, cluster, files))
    expected = {"cert_file": files.cert_file, "key_file": files.key_file, "ca_file": files.ca_file}
    assert config["tls"] == expected and config["cluster"]["tls"] == expected


async def test_a_client_that_trusts_the_ca_talks_over_tls(
    tls_server: NatsServer, certs: Certificates
) -> None:
    assert tls_server.address.startswith("tls://")
    admin = BusCredentials(ADMIN, tls_server.passwords[ADMIN])
    responder = await connect(tls_server.address, "tls-responder", admin, tls_ca_file=certs.ca_file)
    client = await connect(tls_server.address, "tls-client", admin, tls_ca_file=certs.ca_file)
    try:

        async def echo(msg: nats.aio.msg.Msg) -> None:
            await msg.respond(b"echo:" + msg.data)

        await responder.subscribe("tls.echo", cb=echo)
        await responder.flush()
        reply = await client.request("tls.echo", b"over tls", timeout=5)
        assert reply.data == b"echo:over tls"
        # The server agrees the connections are encrypted (its monitoring endpoint, plain HTTP).
        connz = httpx.get(f"{tls_server.monitor_url}/connz", timeout=5).json()
        ours = {c["name"]: c for c in connz["connections"]}
        assert ours["tls-client"].get("tls_version") and ours["tls-responder"].get("tls_version")
    finally:
        await client.close()
        await responder.close()


def test_plain_tcp_is_refused(tls_server: NatsServer) -> None:
    """A client that speaks the protocol in the clear (as any service without TLS would) never
    gets past the greeting: the server waits for a TLS handshake and drops it."""
    password = tls_server.passwords[ADMIN]
    with socket.create_connection((tls_server.host, tls_server.port), timeout=5) as sock:
        info = json.loads(sock.recv(4096).decode().removeprefix("INFO ").strip())
        assert info["tls_required"] is True
        connect_line = json.dumps({"user": ADMIN, "pass": password, "verbose": False, "pedantic": False})
        sock.sendall(f"CONNECT {connect_line}\r\nPING\r\n".encode())
        received = b""
        try:
            for _ in range(20):  # bounded: the server closes the connection well before
                chunk = sock.recv(4096)
                if not chunk:
                    break
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    assert b"PONG" not in received


async def test_a_client_that_does_not_trust_the_ca_is_refused(
    tls_server: NatsServer, certs: Certificates, tmp_path: Path
) -> None:
    password = tls_server.passwords[ADMIN]
    other_ca = make_certificates(tmp_path / "other", ca_name="someone else's CA").ca_file
    for context in (ssl.create_default_context(), ssl.create_default_context(cafile=str(other_ca))):
        with pytest.raises(ssl.SSLCertVerificationError):
            await nats.connect(
                tls_server.address, user=ADMIN, password=password, tls=context,
                allow_reconnect=False, connect_timeout=5,
            )  # fmt: skip


def test_a_service_becomes_ready_over_tls(tmp_path: Path, certs: Certificates) -> None:
    """The ledger, started by the test launcher as in production: `tls://` URL, its own user,
    SWITCHYARD_NATS_TLS_CA_FILE; it sets up its stream and consumer and answers /readyz."""
    workdir = tmp_path / "stack"
    bus_dir = workdir / "bus"
    passwords = busauth.load_or_create_passwords(bus_dir)
    server = NatsServer(
        store_dir=workdir / "nats", passwords=passwords, client_role=ADMIN, tls=certs.server
    ).start()
    env = Stack.base_env(server.address, workdir, SWITCHYARD_NATS_TLS_CA_FILE=str(certs.ca_file))
    stack = Stack(workdir=workdir, nats=server, env=env, bus_dir=bus_dir)
    with running(stack):
        ledger = stack.spawn("ledger", "services.ledger")
        assert ledger.env["SWITCHYARD_NATS_URL"].startswith("tls://")
        connz = httpx.get(f"{server.monitor_url}/connz?auth=true", timeout=5).json()
        ledgers = [c for c in connz["connections"] if c.get("authorized_user") == LEDGER]
        assert ledgers and all(c.get("tls_version") for c in ledgers)


async def test_a_cluster_forms_over_tls_routes(tmp_path: Path, certs: Certificates) -> None:
    passwords = busauth.new_passwords()
    cluster = NatsCluster(tmp_path / "cluster", passwords=passwords, tls=certs.server)
    (tmp_path / "cluster").mkdir()
    try:
        await asyncio.to_thread(cluster.start)  # waits until every node has its routes
        for node in cluster.nodes:
            routez = httpx.get(f"{node.monitor_url}/routez", timeout=5).json()
            assert routez["num_routes"] >= len(cluster.nodes) - 1
            # Every node requires TLS, with the peer's certificate verified, on its route port:
            # the routes that formed are TLS routes.
            routes = httpx.get(f"{node.monitor_url}/varz", timeout=5).json()["cluster"]
            assert routes["tls_required"] is True and routes["tls_verify"] is True
        admin = BusCredentials(ADMIN, passwords[ADMIN])
        first, last = cluster.nodes[0], cluster.nodes[-1]
        subscriber = await connect(last.address, "tls-sub", admin, tls_ca_file=certs.ca_file)
        publisher = await connect(first.address, "tls-pub", admin, tls_ca_file=certs.ca_file)
        try:
            sub = await subscriber.subscribe("tls.across")
            await subscriber.flush()
            for _ in range(50):  # the subscription's interest reaches the other node over the route
                await publisher.publish("tls.across", b"hop")
                await publisher.flush()
                try:
                    msg = await sub.next_msg(timeout=0.2)
                    break
                except nats.errors.TimeoutError:
                    continue
            else:
                pytest.fail("no message crossed the TLS routes")
            assert msg.data == b"hop"
        finally:
            await publisher.close()
            await subscriber.close()
    finally:
        cluster.stop()
