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

import httpx
import pytest

from services.ingress.edge import EdgeLimits, Overload, json_depth_exceeds, shed_reason
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
            b"POST /llm.invoke HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
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


async def test_sheds_load_while_the_ledger_falls_behind(edge_stack: Stack) -> None:
    ledger = edge_stack.by_name("ledger")[0]
    ledger.stop(signal.SIGKILL)
    async with httpx.AsyncClient(
        base_url=edge_stack.ingress_url, headers=edge_stack.headers, timeout=10
    ) as http:
        # Served while the lag is small (the ledger had caught up before it was killed)...
        assert (await http.post("/llm.invoke", json=BODY)).status_code == 200
        # ...then completions pile up in the stream with nobody consuming, and once the polled
        # lag passes the limit (4) the ingress sheds. How many requests that takes depends on
        # the poll's timing, so the test only waits for it.
        deadline = time.monotonic() + 15
        while (
            r := await http.post("/llm.invoke", json=BODY)
        ).status_code == 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert r.status_code == 503 and "ledger" in r.json()["error"]["message"]

        edge_stack.spawn("ledger", "services.ledger")  # it catches up, and the gateway recovers
        deadline = time.monotonic() + 15
        while (
            r := await http.post("/llm.invoke", json=BODY)
        ).status_code != 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.3)
        assert r.status_code == 200
