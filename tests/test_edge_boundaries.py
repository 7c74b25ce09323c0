"""The edge's trust boundaries against real processes (docs/reliability.md, "The edge"):
slow clients cannot hold the HTTP API, gRPC passes the same admission, the dashboard refuses
foreign Hosts and unauthenticated reads, metadata is bounded, and a deleted project's keys die.

One stack, two ingresses on the same bus: `hold` with deadlines far longer than the test (so
slow connections stay open while a real client is served) and `tight` with short ones (to see
them cut). Slow clients are raw asyncio sockets; every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import resource
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from switchyard.natsserver import free_port
from switchyard.testing.stack import ServiceProc, Stack
from switchyard.v1 import gateway_pb2_grpc, invoke_pb2

SLOW_CONNECTIONS = 2000
SOURCES = 20  # slow clients come from 127.0.0.2 .. 127.0.0.21, 100 connections each
PER_CLIENT = 150  # the hold ingress's per-address limit
FD_NEEDED = 4 * SLOW_CONNECTIONS + 1024  # this process's sockets, plus the ingress's (it inherits the limit)
TIGHT_DEADLINE_S = 1.5
BODY = {"model": "demo/fast", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= FD_NEEDED:
        return
    if hard != resource.RLIM_INFINITY and hard < FD_NEEDED:
        pytest.skip(f"the open-files hard limit ({hard}) is below the {FD_NEEDED} this test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_NEEDED, hard))


@pytest.fixture(scope="module")
def edges() -> Iterator[tuple[Stack, ServiceProc, ServiceProc]]:
    _raise_fd_limit()  # before any process starts: children inherit it
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-edgeb-"))
    stack = Stack.create(workdir, SWITCHYARD_DEMO_LATENCY_MS="800")
    try:
        stack.start(
            ("ledger", "services.ledger"),
            ("budget", "services.budget"),
            ("worker-demo", "services.providers", "--provider", "demo"),
            ("router", "services.router"),
        )
        hold = stack.spawn(
            "ingress-hold",
            "services.ingress",
            wait=False,
            SWITCHYARD_HEADER_TIMEOUT_S="120",
            SWITCHYARD_BODY_TIMEOUT_S="120",
            SWITCHYARD_MAX_IN_FLIGHT="8",
            SWITCHYARD_MAX_CONNECTIONS="4000",
            SWITCHYARD_MAX_CONNECTIONS_PER_CLIENT=str(PER_CLIENT),
        )
        tight = stack.spawn(
            "ingress-tight",
            "services.ingress",
            wait=False,
            SWITCHYARD_HEADER_TIMEOUT_S=str(TIGHT_DEADLINE_S),
            SWITCHYARD_BODY_TIMEOUT_S=str(TIGHT_DEADLINE_S),
            SWITCHYARD_MAX_IN_FLIGHT="2",
            SWITCHYARD_GRPC_PORT=str(free_port()),
        )
        stack.wait_ready(hold)
        stack.wait_ready(tight)
        stack.provision()
        yield stack, hold, tight
    except Exception:
        print(stack.logs())
        raise
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def url(ingress: ServiceProc) -> str:
    return f"http://127.0.0.1:{ingress.env['SWITCHYARD_PORT']}"


def request_head(stack: Stack, length: int, authenticated: bool = True) -> bytes:
    key = f"Authorization: Bearer {stack.api_key}\r\n" if authenticated else ""
    return (
        f"POST /llm.invoke HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{key}"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


async def _open(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def _closed_by_server(reader: asyncio.StreamReader, within_s: float) -> tuple[bool, bytes]:
    """(True, what was sent before EOF) if the server ends the connection within `within_s`."""
    received = b""
    deadline = time.monotonic() + within_s
    try:
        while (left := deadline - time.monotonic()) > 0:
            try:
                data = await asyncio.wait_for(reader.read(4096), left)
            except TimeoutError:
                return False, received
            if not data:
                return True, received
            received += data
    except ConnectionError:  # a reset is an end too
        return True, received
    return False, received


async def test_two_thousand_slow_connections_leave_an_authenticated_client_served(edges) -> None:
    stack, hold, _ = edges
    port = int(hold.env["SWITCHYARD_PORT"])
    slow: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        # Half send their headers a byte at a time (never finishing them); half are
        # authenticated and send a body a byte at a time. Both used to hold an in-flight slot
        # or a connection for as long as they liked; with max_in_flight 8, every real request
        # then got 503.
        for i in range(SLOW_CONNECTIONS):
            reader, writer = await _open(port, f"127.0.0.{2 + i % SOURCES}")
            if i % 2:
                writer.write(request_head(stack, 1000) + b"{")
            else:
                writer.write(b"POST /llm.invoke HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            slow.append((reader, writer))
        for _, writer in slow:  # one more byte each, the drip
            writer.write(b" ")
        await asyncio.gather(*(w.drain() for _, w in slow))

        async with httpx.AsyncClient(base_url=url(hold), headers=stack.headers, timeout=15) as http:
            answers = await asyncio.gather(*(http.post("/llm.invoke", json=BODY) for _ in range(4)))
        assert [r.status_code for r in answers] == [200] * 4, [r.text for r in answers]

        for _, writer in slow:
            writer.write(b" ")
        await asyncio.sleep(0.2)
        still_open = sum(not reader.at_eof() and not writer.is_closing() for reader, writer in slow)
        assert still_open == SLOW_CONNECTIONS  # they were held, not dropped, while the client was served
    finally:
        for _, writer in slow:
            writer.close()


async def test_one_address_cannot_open_more_than_its_connections(edges) -> None:
    _, hold, _ = edges
    port = int(hold.env["SWITCHYARD_PORT"])
    extra = 10
    conns = [await _open(port, "127.0.0.99") for _ in range(PER_CLIENT + extra)]
    try:
        for _, writer in conns:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        outcomes = await asyncio.gather(*(_closed_by_server(reader, 3) for reader, _ in conns))
        closed = sum(done for done, _ in outcomes)
        assert closed == extra, f"{closed} of {len(conns)} connections from one address were closed"
        async with httpx.AsyncClient(base_url=url(hold), timeout=10) as http:  # another address: served
            assert (await http.get("/healthz")).status_code == 200
            metrics = (await http.get("/metrics")).text
        counted = 'switchyard_ingress_connections_closed_total{reason="max_connections_per_client"} 10.0'
        assert counted in metrics
    finally:
        for _, writer in conns:
            writer.close()


async def test_a_slow_header_is_closed_at_its_deadline(edges) -> None:
    _, _, tight = edges
    reader, writer = await _open(int(tight.env["SWITCHYARD_PORT"]), "127.0.0.1")
    try:
        writer.write(b"POST /llm.invoke HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        closed = False
        response = b""
        for _ in range(40):  # a header byte every 0.25 s: never idle long enough for a per-read timeout
            writer.write(b"X")
            closed, data = await _closed_by_server(reader, 0.25)
            response += data
            if closed:
                break
        assert closed, "a header sent a byte at a time was still open after 10 s"
        assert time.monotonic() - started < TIGHT_DEADLINE_S + 3
        assert response.startswith(b"HTTP/1.1 408")
    finally:
        writer.close()


async def test_a_slow_body_is_closed_at_its_deadline(edges) -> None:
    stack, _, tight = edges
    reader, writer = await _open(int(tight.env["SWITCHYARD_PORT"]), "127.0.0.1")
    try:
        writer.write(request_head(stack, 1000))
        started = time.monotonic()
        closed = False
        response = b""
        for _ in range(40):  # a body byte every 0.25 s: the old per-chunk timeout never fired
            writer.write(b" ")
            closed, data = await _closed_by_server(reader, 0.25)
            response += data
            if closed:
                break
        assert closed, "a body sent a byte at a time was still open after 10 s"
        assert time.monotonic() - started < TIGHT_DEADLINE_S + 3
        assert response.startswith(b"HTTP/1.1 408")
    finally:
        writer.close()


@pytest.mark.parametrize("path", ["/llm.invoke", "/admin/v1/projects"])
async def test_an_unauthenticated_upload_is_refused_before_its_body(edges, path: str) -> None:
    stack, _, tight = edges
    reader, writer = await _open(int(tight.env["SWITCHYARD_PORT"]), "127.0.0.1")
    try:
        writer.write(
            request_head(stack, 100_000, authenticated=False).replace(b"/llm.invoke", path.encode()) + b"{"
        )
        closed, response = await _closed_by_server(reader, 10)
        assert response.startswith(b"HTTP/1.1 401")
        assert closed  # and the connection ends: the rest of the body is never waited for
    finally:
        writer.close()


async def test_grpc_honours_the_in_flight_limit_and_authenticates_first(edges) -> None:
    stack, _, tight = edges
    target = f"127.0.0.1:{tight.env['SWITCHYARD_GRPC_PORT']}"
    request = invoke_pb2.InvokeRequest(model="demo/fast", max_tokens=2)
    request.messages.add(role=invoke_pb2.ROLE_USER).content.add(text="hi")
    auth = (("authorization", f"Bearer {stack.api_key}"),)

    async def one(metadata) -> tuple[grpc.StatusCode, str]:
        call = stub.Invoke(request, metadata=metadata, timeout=20)
        try:
            await call
        except grpc.aio.AioRpcError as error:
            code = dict(error.trailing_metadata() or ()).get("switchyard-error-code", "")
            return error.code(), code
        return grpc.StatusCode.OK, ""

    async with grpc.aio.insecure_channel(target) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        assert (await one(())) == (grpc.StatusCode.UNAUTHENTICATED, "unauthorized")
        outcomes = await asyncio.gather(*(one(auth) for _ in range(10)))
        assert outcomes.count((grpc.StatusCode.OK, "")) == 2, outcomes
        assert outcomes.count((grpc.StatusCode.UNAVAILABLE, "overloaded")) == 8, outcomes
        assert (await one(auth))[0] == grpc.StatusCode.OK  # and it recovers


async def test_oversized_metadata_is_refused_on_http(edges) -> None:
    stack, _, tight = edges
    async with httpx.AsyncClient(base_url=url(tight), headers=stack.headers, timeout=15) as http:
        many = {f"k{i}": "v" for i in range(33)}
        for path, body in (
            ("/llm.invoke", dict(BODY, metadata=many)),
            ("/v1/chat/completions", dict(BODY, metadata={"k": "v" * 600})),
            ("/llm.invoke", dict(BODY, metadata={"k" * 200: "v"})),
        ):
            r = await http.post(path, json=body)
            assert r.status_code == 400, (path, r.text)
            assert "metadata" in r.text
        # 32 in the body plus one in a header is over the bound too: it holds for the request.
        r = await http.post(
            "/llm.invoke",
            json=dict(BODY, metadata={f"k{i}": "v" for i in range(32)}),
            headers={"x-switchyard-metadata-extra": "v"},
        )
        assert r.status_code == 400
        assert (await http.post("/llm.invoke", json=dict(BODY, metadata={"team": "a"}))).status_code == 200


async def test_the_dashboard_refuses_a_foreign_host_and_an_unauthenticated_read(edges) -> None:
    stack, _, _ = edges
    async with httpx.AsyncClient(base_url=stack.dashboard_url, timeout=10) as http:
        r = await http.get("/api/recent", headers={"host": "evil.example", **stack.dashboard_headers})
        assert r.status_code == 421  # DNS rebinding: even with the token, a foreign Host is refused
        r = await http.get("/", headers={"host": "evil.example"})
        assert r.status_code == 421 and "Switchyard" not in r.text
        for path in ("/", "/api/recent", "/api/requests/req_x", "/api/feed", "/api/budgets"):
            r = await http.get(path)
            assert r.status_code == 401, path
        assert (await http.get("/api/recent", headers={"authorization": "Bearer wrong"})).status_code == 401
        assert (await http.get("/login?token=wrong")).status_code == 401
        assert (await http.get("/healthz")).status_code == 200  # probes need no login
        ok = await http.get("/api/recent", headers=stack.dashboard_headers)
        assert ok.status_code == 200 and "items" in ok.json()
        as_admin = await http.get("/api/recent", headers={"authorization": f"Bearer {stack.admin_token}"})
        assert as_admin.status_code == 200
        r = await http.get(
            "/api/recent", headers={"host": f"localhost:{stack.dashboard_url.rsplit(':', 1)[1]}"}
        )
        assert r.status_code == 401  # an allowed Host still needs the login

    async with httpx.AsyncClient(timeout=10, follow_redirects=True) as browser:
        page = await browser.get(stack.dashboard_login_url)
        assert page.status_code == 200 and "Switchyard dashboard" in page.text
        assert str(page.url) == stack.dashboard_url + "/"  # the token left the address bar
        assert (await browser.get(stack.dashboard_url + "/api/recent")).status_code == 200  # the cookie


async def test_a_deleted_projects_keys_stop_working_and_do_not_come_back(edges) -> None:
    stack, _, tight = edges
    key = stack.provision("doomed")
    cap = {"scope": "project", "scope_id": "doomed", "period": "day", "cap_usd": "5"}
    assert stack.admin("PUT", "/budgets", json=cap).status_code == 200
    assert stack.admin("POST", "/projects/doomed/agents", json={"id": "bot"}).status_code == 201
    headers = {"authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url(tight), headers=headers, timeout=15) as http:
        assert (await http.post("/llm.invoke", json=BODY)).status_code == 200

        deleted = stack.admin("DELETE", "/projects/doomed")
        assert deleted.status_code == 200, deleted.text
        assert deleted.json() == {
            "deleted": "doomed",
            "revoked_keys": 1,
            "deleted_budgets": 1,
            "deleted_agents": 1,
        }
        assert await _refused_within(http, 10)  # the other ingress learns it through the KV watch
        assert stack.admin("GET", "/budgets?project=doomed").json() == {"data": []}
        keys = stack.admin("GET", "/keys?project=doomed").json()["data"]
        assert keys and all(k["revoked"] for k in keys)

        assert stack.admin("POST", "/projects", json={"id": "doomed"}).status_code == 201
        await asyncio.sleep(0.5)  # the watch has the new project: the old key stays dead
        r = await http.post("/llm.invoke", json=BODY)
        assert r.status_code == 401
        assert stack.admin("GET", "/budgets?project=doomed").json() == {"data": []}
        assert stack.admin("GET", "/projects/doomed/agents").json() == {"data": []}
        fresh = stack.provision("doomed")
        r = await http.post("/llm.invoke", json=BODY, headers={"authorization": f"Bearer {fresh}"})
        assert r.status_code == 200


async def _refused_within(http: httpx.AsyncClient, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (await http.post("/llm.invoke", json=BODY)).status_code == 401:
            return True
        await asyncio.sleep(0.1)
    return False
