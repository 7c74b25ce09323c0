"""The in-flight journal of a worker inside an ingress process (services/providers/inflight.py):
an ingress running the router and a worker (SWITCHYARD_WORKER_MODE=ingress) SIGKILLed with a
stream in flight leaves a record for it, billed what its client received, written by the next
process of the same instance at its start, or by another instance once the journal is stale.

Real processes: NATS, ledger (chDB), budget, ingress processes, the fake OpenAI upstream. Waits
are bounded polls, never timed assertions."""

from __future__ import annotations

import asyncio
import signal
import tempfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from services.providers.inflight import adoptable, instance_name, record_ids
from switchyard.natsserver import free_port
from switchyard.testing.stack import ServiceProc, Stack, running, wait_for_rows
from switchyard.v1 import events_pb2, liveness_pb2
from tests.fakes import OpenAIFake
from tests.fakes.base import Behavior

pytestmark = pytest.mark.timeout(300)

CONFIG = """
[[deployments]]
id = "openai/slow"
provider = "openai"
model = "gpt-slow"
base_url = "{base_url}"
api_key = "sk-journal"
price = {{ input = 3.0, output = 15.0 }}
"""


def test_a_journal_is_recorded_by_its_own_instance_at_once_and_by_others_when_stale() -> None:
    journal = liveness_pb2.InflightJournal(instance="a-8080", updated_unix_ms=10_000)
    # A predecessor of this instance's: as soon as no live writer can be behind it.
    assert adoptable(journal, "a-8080", now_ms=11_500, stale_s=30, fresh_s=1.5)
    assert not adoptable(journal, "a-8080", now_ms=11_000, stale_s=30, fresh_s=1.5)  # a live twin's
    assert not adoptable(journal, "b-8080", now_ms=39_999, stale_s=30, fresh_s=1.5)  # another's, fresh
    assert adoptable(journal, "b-8080", now_ms=40_000, stale_s=30, fresh_s=1.5)


def test_instance_names_are_kv_keys_and_records_keep_their_request_ids() -> None:
    assert instance_name("", 8080).endswith("-8080")
    assert instance_name("pod.a b*", 1) == "pod_a_b_"
    record = events_pb2.Completion(request_id="r1").SerializeToString()
    journal = liveness_pb2.InflightJournal(records=[record, b"\xff\xff not a record"])
    assert record_ids(journal) == [("r1", record)]


@pytest.fixture(scope="module")
def fake() -> Iterator[OpenAIFake]:
    upstream = OpenAIFake(api_key="sk-journal").start()
    yield upstream
    upstream.stop()


@pytest.fixture
def stack(fake: OpenAIFake) -> Iterator[Stack]:
    fake.reset()
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-journal-"))
    config = workdir / "switchyard.toml"
    config.write_text(CONFIG.format(base_url=fake.base_url))
    stack = Stack.create(
        workdir,
        SWITCHYARD_ROUTER_MODE="ingress",
        SWITCHYARD_WORKER_MODE="ingress",
        SWITCHYARD_CONFIG_FILE=str(config),
        SWITCHYARD_INFLIGHT_STALE_S="2",
    )
    with running(stack):
        stack.start(("ledger", "services.ledger"))
        stack.start(("budget", "services.budget"))
        yield stack
    fake.reset()


async def stream_until_chunks_then_kill(ingress: ServiceProc, stack: Stack) -> tuple[str, int]:
    """A stream through `ingress`, SIGKILLed once the client has two chunks and a journal write
    has passed; the request id and the chunks the client got."""
    body = {
        "model": "openai/slow",
        "max_tokens": 60,
        "stream": True,
        "messages": [{"role": "user", "content": "kill the process serving me"}],
    }
    url = f"http://127.0.0.1:{ingress.env['SWITCHYARD_PORT']}"
    text, request_id = "", ""
    with pytest.raises(httpx.HTTPError):  # the connection breaks with the process
        async with (
            httpx.AsyncClient(base_url=url, headers=stack.headers, timeout=60) as http,
            http.stream("POST", "/llm.invoke", json=body) as response,
        ):
            request_id = response.headers["x-request-id"]
            async for piece in response.aiter_text():
                text += piece
                if text.count("event: chunk") >= 2 and ingress.process.poll() is None:
                    await asyncio.sleep(1.2)  # beats of 0.5 s: the journal has what was sent
                    ingress.stop(signal.SIGKILL)
    return request_id, text.count("event: chunk")


async def lost_row(stack: Stack, request_id: str) -> dict:
    (row,) = await wait_for_rows(
        stack.nats.url,
        "SELECT status, error_code, toString(cost_usd) AS cost, completion_tokens FROM requests FINAL "
        "WHERE request_id = {id:String}",
        1,
        {"id": request_id},
        timeout_s=60,
    )
    return row


async def test_a_killed_process_is_recorded_by_the_next_of_its_instance(
    stack: Stack, fake: OpenAIFake
) -> None:
    fake.behave(Behavior(text=" ".join(f"w{i}" for i in range(40)), chunk_delay_s=0.4))
    port = str(free_port())
    first = stack.spawn("ingress", "services.ingress", SWITCHYARD_PORT=port, SWITCHYARD_INSTANCE="edge-1",
                        SWITCHYARD_INFLIGHT_STALE_S="600")  # fmt: skip
    stack.provision()
    request_id, chunks = await stream_until_chunks_then_kill(first, stack)
    assert request_id and chunks >= 2
    # The next process of the instance records it at its start (no other process is running).
    stack.spawn("ingress", "services.ingress", SWITCHYARD_PORT=port, SWITCHYARD_INSTANCE="edge-1",
                SWITCHYARD_INFLIGHT_STALE_S="600")  # fmt: skip
    row = await lost_row(stack, request_id)
    assert (row["status"], row["error_code"]) == ("error", "unavailable")
    assert Decimal(row["cost"]) > 0 and row["completion_tokens"] >= chunks  # billed what was sent


async def test_a_killed_process_is_recorded_by_another_instance_once_stale(
    stack: Stack, fake: OpenAIFake
) -> None:
    fake.behave(Behavior(text=" ".join(f"w{i}" for i in range(40)), chunk_delay_s=0.4))
    doomed = stack.spawn("ingress", "services.ingress", SWITCHYARD_INSTANCE="edge-gone")
    stack.spawn("ingress", "services.ingress", SWITCHYARD_INSTANCE="edge-alive")
    stack.provision()
    request_id, chunks = await stream_until_chunks_then_kill(doomed, stack)
    row = await lost_row(stack, request_id)  # edge-alive, after the 2 s of staleness
    assert (row["status"], row["error_code"]) == ("error", "unavailable")
    assert Decimal(row["cost"]) > 0 and row["completion_tokens"] >= chunks
