"""Completion events stored before the client's answer (docs/reliability.md, "Completion events
before the answer"): while the events stream cannot take them (here: full, new messages
discarded), a worker refuses its clients (503) instead of serving them with the record only in
its memory; killed in that state, it loses no served request's record."""

from __future__ import annotations

import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest
from nats.js.api import DiscardPolicy

from switchyard import subjects
from switchyard.bus import events_stream_config
from switchyard.testing.stack import Stack, running, wait_for_rows

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
    async with httpx.AsyncClient(base_url=stack.ingress_url, headers=stack.headers, timeout=30) as http:

        async def ask(stream: bool = False) -> httpx.Response:
            r = await http.post("/llm.invoke", json=dict(BODY, stream=stream))
            if r.status_code == 200:
                served.append(r.headers["x-request-id"])
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
