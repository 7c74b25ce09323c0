"""Completion events stored before the client's answer (docs/reliability.md, "Completion events
before the answer"): while the events stream cannot take them (here: full, new messages
discarded), a worker refuses its clients (503) instead of serving them with the record only in
its memory; killed in that state, it loses no served request's record. A stream already in
flight when the stream fails keeps its record in the worker's beats, so a router records it
when that worker dies."""

from __future__ import annotations

import asyncio
import re
import signal
import tempfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import nats
import pytest
from nats.js.api import DiscardPolicy

from switchyard import subjects
from switchyard.bus import events_stream_config
from switchyard.testing.stack import Stack, running, wait_for_rows, wait_until

BODY = {"model": "demo/fast", "max_tokens": 8, "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(scope="module")
def events_stack() -> Iterator[Stack]:
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-durable-"))
    stack = Stack.create(workdir, SWITCHYARD_DEMO_LATENCY_MS="5", SWITCHYARD_EVENT_STORE_WAIT_S="1")
    with running(stack):
        stack.start_all()
        yield stack


async def set_events_full(nats_url: str, full: bool) -> None:
    """Make the EVENTS stream refuse new messages (a full store), or take them again."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        config = events_stream_config()
        if full:
            config.max_msgs = (await js.stream_info(subjects.EVENTS_STREAM)).state.messages
            config.discard = DiscardPolicy.NEW
        await js.update_stream(config)
    finally:
        await nc.close()


async def test_a_worker_killed_while_events_cannot_be_stored_loses_no_served_record(
    events_stack: Stack,
) -> None:
    stack = events_stack
    served: list[str] = []
    refused: list[str] = []
    async with httpx.AsyncClient(base_url=stack.ingress_url, headers=stack.headers, timeout=30) as http:

        async def ask(stream: bool = False) -> httpx.Response:
            r = await http.post("/llm.invoke", json=dict(BODY, stream=stream))
            (served if r.status_code == 200 else refused).append(r.headers["x-request-id"])
            return r

        assert [(await ask()).status_code for _ in range(3)] == [200] * 3

        await set_events_full(stack.nats.url, True)
        during = [await ask() for _ in range(4)] + [await ask(stream=True)]
        # Refused, not served: the first after its record could not be stored within the wait,
        # the rest at once, before any upstream call.
        assert [r.status_code for r in during] == [503] * 5, [r.text for r in during]
        assert {r.json()["error"]["code"] for r in during} == {"unavailable"}

        stack.by_name("worker-demo")[0].stop(signal.SIGKILL)
        await set_events_full(stack.nats.url, False)
        stack.spawn("worker-demo", "services.providers", "--provider", "demo")
        for _ in range(3):
            assert (await ask()).status_code == 200

    assert len(served) == 6
    rows = await wait_for_rows(
        stack.nats.url,
        "SELECT request_id FROM requests FINAL WHERE request_id IN {ids:Array(String)}",
        len(served),
        {"ids": served},
    )
    assert {r["request_id"] for r in rows} == set(served)
    # The refusals too: their records rode the killed worker's beats (or, for one it had not
    # reported yet, the router that routed it recorded it when the worker was lost).
    await wait_for_rows(
        stack.nats.url,
        "SELECT request_id FROM requests FINAL WHERE request_id IN {ids:Array(String)}",
        len(refused),
        {"ids": refused},
    )


async def test_a_stream_in_flight_when_events_fail_keeps_its_record_through_its_workers_death(
    events_stack: Stack,
) -> None:
    """The issue's last case: a stream sends its chunks before its record can be stored; the
    events stream fails during it, then its worker is killed. Its record (what it delivered, at
    its cost) was in the worker's beats: the router publishes it once the stream takes events."""
    stack = events_stack
    for worker in stack.by_name("worker-demo"):
        if worker.process.poll() is None:
            worker.stop()
    slow = stack.spawn(
        "worker-slow", "services.providers", "--provider", "demo", SWITCHYARD_DEMO_CHUNK_DELAY_MS="400"
    )
    async with httpx.AsyncClient(base_url=stack.ingress_url, headers=stack.headers, timeout=30) as http:
        first_chunk = asyncio.Event()

        async def stream() -> tuple[str, str]:
            text = ""
            async with http.stream("POST", "/llm.invoke", json=dict(BODY, stream=True)) as response:
                request_id = response.headers["x-request-id"]
                async for piece in response.aiter_text():
                    text += piece
                    if "event: chunk" in text:
                        first_chunk.set()
            return text, request_id

        in_flight = asyncio.create_task(stream())
        await asyncio.wait_for(first_chunk.wait(), 20)
        await set_events_full(stack.nats.url, True)
        text, request_id = await asyncio.wait_for(in_flight, 30)
    # The client has the content, then an in-band error instead of the final frame.
    assert "event: chunk" in text and "event: error" in text and "event: final" not in text, text[-300:]
    await asyncio.sleep(1.0)  # a beat carries the record it could not store
    slow.stop(signal.SIGKILL)
    router = stack.by_name("router")[0]
    wait_until(lambda: "recording it for its lost provider worker" in router.log(), 20, what="takeover")
    await set_events_full(stack.nats.url, False)
    rows = await wait_for_rows(
        stack.nats.url,
        "SELECT status, error_code, completion_tokens, toString(cost_usd) AS cost FROM requests FINAL"
        " WHERE request_id = {id:String}",
        1,
        {"id": request_id},
    )
    delivered = len(re.findall(r"^event: chunk$", text, flags=re.MULTILINE))
    assert rows[0]["status"] == "error" and rows[0]["error_code"] == "unavailable", rows
    assert rows[0]["completion_tokens"] == delivered and Decimal(rows[0]["cost"]) > 0, rows
