"""Edge limits and load shedding at the ingress, through real processes."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import nats
import openai
import pytest

from services.ingress.connections import ConnectionGuard
from services.ingress.edge import EdgeLimits, LagReading, Overload, json_depth_exceeds, shed_reason
from switchyard import subjects
from switchyard.testing.stack import Stack

BODY = {"model": "demo/fast", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def test_json_depth() -> None:
    assert not json_depth_exceeds({"a": [1, {"b": 2}]}, 3)
    assert json_depth_exceeds({"a": [1, {"b": {"c": 1}}]}, 3)
    deep: list = []
    for _ in range(10_000):  # far deeper than Python's recursion limit
        deep = [deep]
    assert json_depth_exceeds(deep, 64)


def test_shed_reason() -> None:
    limits = EdgeLimits(max_in_flight=2, max_ledger_lag=10)
    overload = Overload()
    assert shed_reason(limits, overload) == ""
    overload.in_flight = 2
    assert "capacity" in shed_reason(limits, overload)
    overload.in_flight = 0
    overload.ledger_lag = 11
    assert "ledger" in shed_reason(limits, overload)
    overload.ledger_lag = None  # unknown past the grace: shed, as if behind
    assert "cannot be read" in shed_reason(limits, overload)


def test_an_unreadable_ledger_lag_fails_closed_after_the_grace() -> None:
    reading = LagReading(grace_s=5, now=100.0)
    assert reading.failed(now=101.0) == 0  # starting up: the ledger has not made its consumer yet
    assert reading.ok(7, now=102.0) == 7
    assert reading.failed(now=106.0) == 7  # a blip keeps the last good value
    assert reading.failed(now=107.5) is None  # then unknown, which sheds
    assert reading.ok(3, now=108.0) == 3  # and it recovers with the next good read


def test_connection_guard_limits_per_client_and_in_total() -> None:
    guard = ConnectionGuard(max_connections=3, max_connections_per_client=2)
    assert guard.admit("10.0.0.1") == guard.admit("10.0.0.1") == ""
    assert guard.admit("10.0.0.1") == "max_connections_per_client"
    assert guard.admit("10.0.0.2") == ""
    assert guard.admit("10.0.0.3") == "max_connections"
    guard.release("10.0.0.1")
    assert guard.admit("10.0.0.3") == "" and guard.total == 3
    assert guard.by_client == {"10.0.0.1": 1, "10.0.0.2": 1, "10.0.0.3": 1}
    unlimited = ConnectionGuard(max_connections=0, max_connections_per_client=0)
    assert not any(unlimited.admit("10.0.0.1") for _ in range(10_000))


@pytest.fixture(scope="module")
def edge_stack() -> Iterator[Stack]:
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-edge-"))
    stack = Stack.create(
        workdir,
        SWITCHYARD_DEMO_LATENCY_MS="400",
        SWITCHYARD_MAX_BODY_BYTES="20000",
        SWITCHYARD_MAX_HEADER_BYTES="4000",
        SWITCHYARD_MAX_JSON_DEPTH="8",
        SWITCHYARD_BODY_TIMEOUT_S="1",
        SWITCHYARD_MAX_IN_FLIGHT="3",
        SWITCHYARD_MAX_LEDGER_LAG="4",
    )
    try:
        stack.start_all()
        yield stack
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def test_body_header_and_depth_limits(edge_stack: Stack) -> None:
    async with httpx.AsyncClient(
        base_url=edge_stack.ingress_url, headers=edge_stack.headers, timeout=10
    ) as http:
        big = dict(BODY, messages=[{"role": "user", "content": "x" * 30_000}])
        r = await http.post("/llm.invoke", json=big)
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"

        async def chunked():  # no Content-Length: counted as it arrives
            for _ in range(30):
                yield b" " * 1000

        r = await http.post("/llm.invoke", content=chunked())
        assert r.status_code == 413

        r = await http.post("/llm.invoke", json=BODY, headers={"x-junk": "y" * 5000})
        assert r.status_code == 431

        nested: dict = {"type": "object"}
        for _ in range(10):
            nested = {"type": "object", "properties": {"n": nested}}
        tools = [{"type": "function", "function": {"name": "f", "parameters": nested}}]
        r = await http.post("/llm.invoke", json=dict(BODY, tools=tools))
        assert r.status_code == 400 and "deeper" in r.json()["error"]["message"]

        too_many = dict(BODY, messages=[{"role": "user", "content": "x"}] * 3000)
        r = await http.post("/llm.invoke", json=too_many)
        assert r.status_code in (400, 413)


async def test_no_client_supplied_upstream_is_followed(edge_stack: Stack) -> None:
    async with httpx.AsyncClient(
        base_url=edge_stack.ingress_url, headers=edge_stack.headers, timeout=10
    ) as http:
        for field in ("base_url", "api_base", "upstream_url"):
            r = await http.post("/llm.invoke", json=dict(BODY, **{field: "http://169.254.169.254/latest"}))
            assert r.status_code == 400, field
            assert field in r.json()["error"]["message"]


def test_a_stalled_body_gets_408(edge_stack: Stack) -> None:
    port = int(edge_stack.ingress_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"POST /llm.invoke HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {edge_stack.api_key}\r\n".encode()
            + b"Content-Length: 100\r\n\r\n{"
        )
        started = time.monotonic()
        response = sock.recv(4096).decode()
    assert response.startswith("HTTP/1.1 408")
    assert time.monotonic() - started < 4


async def test_sheds_load_with_503_when_too_much_is_in_flight(edge_stack: Stack) -> None:
    async with httpx.AsyncClient(
        base_url=edge_stack.ingress_url, headers=edge_stack.headers, timeout=10
    ) as http:
        results = await asyncio.gather(*[http.post("/llm.invoke", json=BODY) for _ in range(8)])
        statuses = sorted(r.status_code for r in results)
        assert statuses.count(200) >= 3
        shed = [r for r in results if r.status_code == 503]
        assert shed, statuses
        assert shed[0].json()["error"]["code"] == "overloaded"
        assert shed[0].headers["retry-after"] == "1"
        assert (await http.get("/healthz")).status_code == 200  # health is never shed
        assert (await http.post("/llm.invoke", json=BODY)).status_code == 200  # and it recovers


async def test_the_sdks_see_edge_refusals_in_their_own_shape(edge_stack: Stack) -> None:
    """413 and load shedding through the official SDKs: each raises its own status error with
    its own error type and code, and reads the request id where it looks for one."""
    big = [{"role": "user", "content": "x" * 30_000}]
    async with (
        openai.AsyncOpenAI(
            base_url=edge_stack.ingress_url + "/v1", api_key=edge_stack.api_key, max_retries=0
        ) as oai,
        anthropic.AsyncAnthropic(
            base_url=edge_stack.ingress_url, api_key=edge_stack.api_key, max_retries=0
        ) as claude,
    ):
        with pytest.raises(openai.APIStatusError) as too_large:
            await oai.chat.completions.create(model="demo/fast", messages=big)
        assert too_large.value.status_code == 413
        assert (too_large.value.type, too_large.value.code) == ("invalid_request_error", "payload_too_large")
        assert too_large.value.request_id.startswith("req_")

        with pytest.raises(anthropic.APIStatusError) as too_large_a:
            await claude.messages.create(model="demo/fast", max_tokens=4, messages=big)
        assert too_large_a.value.status_code == 413
        assert too_large_a.value.body["error"]["type"] == "request_too_large"
        assert too_large_a.value.request_id.startswith("req_")

        # More at once than max_in_flight (3): some of each are shed.
        small = [{"role": "user", "content": "hi"}]
        results = await asyncio.gather(
            *[oai.chat.completions.create(model="demo/fast", messages=small, max_tokens=4) for _ in range(5)],
            *[claude.messages.create(model="demo/fast", max_tokens=4, messages=small) for _ in range(5)],
            return_exceptions=True,
        )
    shed_openai = [r for r in results[:5] if isinstance(r, openai.APIStatusError)]
    shed_anthropic = [r for r in results[5:] if isinstance(r, anthropic.APIStatusError)]
    assert shed_openai and shed_anthropic, results
    assert {(e.status_code, e.type, e.code) for e in shed_openai} == {(503, "server_error", "overloaded")}
    assert {(e.status_code, e.body["error"]["type"]) for e in shed_anthropic} == {(529, "overloaded_error")}
    assert all(e.request_id.startswith("req_") for e in [*shed_openai, *shed_anthropic])
    assert all(e.response.headers["retry-after"] == "1" for e in [*shed_openai, *shed_anthropic])


@pytest.mark.timeout(240)  # the waits below are bounded at 30 + 60 s, plus a ledger start
async def test_sheds_load_while_the_ledger_falls_behind(edge_stack: Stack) -> None:
    # Start from a ledger that has caught up: the module's earlier tests leave requests in
    # flight and events not yet stored, and the ingress polls the lag once a second.
    nc = await nats.connect(edge_stack.nats.url)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + 30
        while True:
            info = await js.consumer_info(subjects.EVENTS_STREAM, subjects.LEDGER_DURABLE)
            if info.num_pending + info.num_ack_pending == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    finally:
        await nc.close()
    await asyncio.sleep(1.5)  # one poll of the lag after it reached 0
    ledger = edge_stack.by_name("ledger")[0]
    ledger.stop(signal.SIGKILL)
    async with httpx.AsyncClient(
        base_url=edge_stack.ingress_url, headers=edge_stack.headers, timeout=10
    ) as http:
        # Served while the lag is small (the ledger had caught up before it was killed)...
        first = await http.post("/llm.invoke", json=BODY)
        assert first.status_code == 200, first.text
        # ...then completions pile up in the stream with nobody consuming, and once the polled
        # lag passes the limit (4) the ingress sheds. How many requests that takes depends on
        # the poll's timing, so the test only waits for it.
        deadline = time.monotonic() + 30
        while (
            r := await http.post("/llm.invoke", json=BODY)
        ).status_code == 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert r.status_code == 503 and "ledger" in r.json()["error"]["message"]

        edge_stack.spawn("ledger", "services.ledger")  # it catches up, and the gateway recovers
        # Events the killed ledger's open pull had been handed stay ack-pending until their
        # ack_wait (30 s) runs out and JetStream redelivers them: recovery can take that long.
        deadline = time.monotonic() + 60
        while (
            r := await http.post("/llm.invoke", json=BODY)
        ).status_code != 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.3)
        assert r.status_code == 200, r.text
