"""Adaptive admission at the ingress (services/ingress/admission.py, docs/reliability.md).

The limiter alone (pure: the clock is passed in), then the edge refusing with it in each
caller's dialect (the ASGI middleware, no bus needed: a refusal is decided before anything is
published), then one real stack whose limit is pinned to 1 to show the wiring end to end:
settings, HTTP and gRPC refusals with Retry-After, the metric.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from services.ingress.admission import AdaptiveLimit, AdmissionTuning, own_time_ms
from services.ingress.edge import SHED, AdmissionMiddleware, EdgeLimits, Overload, shed
from switchyard.natsserver import free_port
from switchyard.testing.stack import ServiceProc, Stack
from switchyard.v1 import gateway_pb2_grpc, invoke_pb2

TUNING = AdmissionTuning(
    min_limit=4, max_limit=256, tolerance=2.0, floor_ms=10.0, window_s=0.1, min_samples=5
)


def feed(limit: AdaptiveLimit, own_ms: float, in_flight: int, windows: int, start: float = 0.0) -> float:
    """`windows` windows of samples of `own_ms` each; returns the clock after them."""
    now = start
    for _ in range(windows):
        for _ in range(TUNING.min_samples):
            now += TUNING.window_s / TUNING.min_samples
            limit.observe(own_ms, in_flight, now)
    return now


def test_the_limit_starts_open_and_stays_there_while_latency_is_normal() -> None:
    limit = AdaptiveLimit(TUNING)
    assert limit.limit == 256 and limit.admits(255) and not limit.admits(256)
    feed(limit, 5.0, in_flight=200, windows=50)
    assert limit.limit == 256 and limit.windows > 40


def test_a_rising_own_latency_brings_the_limit_down_to_its_floor_and_fast() -> None:
    limit = AdaptiveLimit(TUNING)
    now = feed(limit, 5.0, in_flight=100, windows=20)  # baseline ~5 ms: the floor (10) is the reference
    feed(limit, 15.0, in_flight=100, windows=10, start=now)  # 15 < 2 x 10: not overload
    assert limit.limit == 256
    feed(limit, 200.0, in_flight=100, windows=5, start=now + 1)
    after_five = limit.limit
    assert after_five < 256 * 0.5  # halving-ish per window, not 10 % a window
    feed(limit, 200.0, in_flight=100, windows=40, start=now + 2)
    assert limit.limit < 5  # down to about min_limit (4), where the queue allowance holds it
    assert limit.baseline_ms < 10  # overloaded windows never became the baseline


def test_a_sudden_overload_is_met_from_what_is_in_flight_not_from_the_open_limit() -> None:
    # The limit is still wide open (it starts at max_limit) when 100 requests pile up and the
    # gateway's own time jumps: the first overloaded window cuts from the 100 in flight, where
    # stepping down from 256 left it above them for windows on end while the queue grew (with
    # the default 2048, ~10 windows: the collapse of issue 15's overload run).
    limit = AdaptiveLimit(TUNING)
    now = feed(limit, 5.0, in_flight=3, windows=20)
    assert limit.limit == 256
    feed(limit, 200.0, in_flight=100, windows=1, start=now)
    assert limit.limit < 100
    # A window that was overloaded with few requests in flight cuts no lower than min_limit.
    feed(limit, 200.0, in_flight=1, windows=1, start=now + 1)
    assert limit.limit >= TUNING.min_limit


def test_the_limit_grows_back_only_while_requests_press_against_it() -> None:
    limit = AdaptiveLimit(TUNING, limit=16.0)
    now = feed(limit, 5.0, in_flight=2, windows=30)  # demand far below the limit: no evidence
    assert limit.limit == 16
    feed(limit, 5.0, in_flight=16, windows=30, start=now)
    assert 16 < limit.limit <= 256


def test_a_disabled_limiter_admits_everything_and_learns_nothing() -> None:
    limit = AdaptiveLimit(AdmissionTuning(enabled=False, max_limit=4))
    feed(limit, 10_000.0, in_flight=100, windows=10)
    assert limit.admits(10_000) and limit.windows == 0


def test_own_time_leaves_out_the_upstream_span_and_overlapping_hedges_count_once() -> None:
    assert own_time_ms(130.0, [(1000.0, 100.0)]) == 30.0
    # a hedge started 50 ms into the first attempt and ended 60 ms later: 110 ms upstream, not 170
    assert own_time_ms(130.0, [(1000.0, 110.0), (1050.0, 60.0)]) == 20.0
    assert own_time_ms(130.0, [(1000.0, 200.0)]) == 0.0  # never below 0 (two processes' clocks)
    assert own_time_ms(40.0, []) == 40.0  # no upstream call (a refusal further in): all its own


def test_shed_names_the_adaptive_limit_after_the_fixed_cap() -> None:
    limits = EdgeLimits(max_in_flight=100)
    overload = Overload(AdaptiveLimit(TUNING, limit=5.0))
    overload.in_flight = 4
    assert shed(limits, overload) == ("", "")
    overload.in_flight = 5
    assert shed(limits, overload)[0] == "adaptive_limit"
    overload.in_flight = 100
    assert shed(limits, overload)[0] == "capacity"
    assert shed(limits, Overload())[0] == ""  # adaptive admission off


async def test_the_edge_refuses_at_the_limit_in_each_dialect_with_retry_after() -> None:
    served = []

    async def app(scope, receive, send) -> None:  # what admission lets through
        served.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    overload = Overload(AdaptiveLimit(TUNING, limit=4.0))
    edge = AdmissionMiddleware(app, EdgeLimits(), overload)
    transport = httpx.ASGITransport(app=edge)
    before = SHED.labels("adaptive_limit")._value.get()
    async with httpx.AsyncClient(transport=transport, base_url="http://edge") as http:
        assert (await http.post("/v1/chat/completions", json={})).status_code == 200
        overload.in_flight = 4  # four requests already admitted
        openai = await http.post("/v1/chat/completions", json={})
        anthropic = await http.post("/v1/messages", json={})
        native = await http.post("/llm.invoke", json={})
        assert (await http.get("/healthz")).status_code == 200  # health is never shed
    assert served == ["/v1/chat/completions", "/healthz"]
    assert openai.status_code == 503 and openai.json()["error"]["code"] == "overloaded"
    assert anthropic.status_code == 529 and anthropic.json()["error"]["type"] == "overloaded_error"
    assert native.status_code == 503 and native.json()["error"]["code"] == "overloaded"
    for response in (openai, anthropic, native):
        assert response.headers["retry-after"] == "1" and response.headers["x-request-id"]
    assert SHED.labels("adaptive_limit")._value.get() == before + 3


# --- the wiring, in real processes ---

BODY = {"model": "demo/fast", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.fixture(scope="module")
def pinned() -> Iterator[tuple[Stack, ServiceProc]]:
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-admission-"))
    stack = Stack.create(workdir, SWITCHYARD_DEMO_LATENCY_MS="1500")
    try:
        stack.start(
            ("ledger", "services.ledger"),
            ("budget", "services.budget"),
            ("worker-demo", "services.providers", "--provider", "demo"),
            ("router", "services.router"),
        )
        # Adaptive admission on, its limit pinned to 1: the second request at once is refused.
        ingress = stack.spawn(
            "ingress",
            "services.ingress",
            SWITCHYARD_ADMISSION_ADAPTIVE="true",
            SWITCHYARD_ADMISSION_MIN_LIMIT="1",
            SWITCHYARD_ADMISSION_MAX_LIMIT="1",
            SWITCHYARD_GRPC_PORT=str(free_port()),
        )
        stack.provision()
        yield stack, ingress
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def test_a_real_ingress_refuses_beyond_its_adaptive_limit_on_http_and_grpc(pinned) -> None:
    stack, ingress = pinned
    base = f"http://127.0.0.1:{ingress.env['SWITCHYARD_PORT']}"
    request = invoke_pb2.InvokeRequest(model="demo/fast", max_tokens=2)
    request.messages.add(role=invoke_pb2.ROLE_USER).content.add(text="hi")
    async with (
        httpx.AsyncClient(base_url=base, headers=stack.headers, timeout=30) as http,
        grpc.aio.insecure_channel(f"127.0.0.1:{ingress.env['SWITCHYARD_GRPC_PORT']}") as channel,
    ):
        held = asyncio.ensure_future(http.post("/v1/chat/completions", json=BODY))
        for _ in range(200):  # until the first is admitted (bounded: 200 x 50 ms)
            metrics = (await http.get("/metrics")).text
            if 'switchyard_in_flight_requests{service="ingress"} 1.0' in metrics:
                break
            await asyncio.sleep(0.05)
        refused = await http.post("/v1/chat/completions", json=BODY)
        stub = gateway_pb2_grpc.GatewayStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as grpc_refusal:
            await stub.Invoke(request, metadata=(("authorization", f"Bearer {stack.api_key}"),), timeout=20)
        assert (await held).status_code == 200
        metrics = (await http.get("/metrics")).text
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "overloaded"
    assert grpc_refusal.value.code() == grpc.StatusCode.UNAVAILABLE
    assert dict(grpc_refusal.value.trailing_metadata() or ())["switchyard-error-code"] == "overloaded"
    assert 'switchyard_ingress_shed_total{reason="adaptive_limit"} 2.0' in metrics
    assert "switchyard_ingress_concurrency_limit 1.0" in metrics
