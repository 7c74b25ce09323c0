"""Stream chunks are coalesced between worker and ingress (services/providers/coalesce.py).

The coalescer alone, with a recording publish; then a real worker on a real NATS server, read
from the inbox the ingress would listen on: the first chunk alone, the rest in batches, in
order, and whatever waits sent before the final or the in-band error frame; last, the renderers
turn a batch into the same events as the chunks one by one.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats

from services.ingress.openai_api import ChunkStream
from services.providers.coalesce import ChunkCoalescer
from services.providers.main import ProviderWorker
from switchyard.catalog import build_catalog
from switchyard.natsserver import NatsServer
from switchyard.settings import Settings
from switchyard.v1 import invoke_pb2


def chunk(seq: int, text: str = "w") -> invoke_pb2.Chunk:
    return invoke_pb2.Chunk(seq=seq, delta_text=text)


class Recorder:
    def __init__(self) -> None:
        self.frames: list[invoke_pb2.Reply] = []
        self.sent = asyncio.Event()

    async def __call__(self, data: bytes) -> None:
        self.frames.append(invoke_pb2.Reply.FromString(data))
        self.sent.set()

    def seqs(self) -> list[list[int]]:
        """Each frame's chunk numbers."""
        out = []
        for frame in self.frames:
            kind = frame.WhichOneof("frame")
            out.append([frame.chunk.seq] if kind == "chunk" else [c.seq for c in frame.chunks.chunks])
        return out


async def test_the_first_chunk_goes_out_at_once_and_the_rest_wait_for_the_window() -> None:
    sent = Recorder()
    coalescer = ChunkCoalescer(sent, window_s=60.0, max_bytes=1 << 20)
    await coalescer.add(chunk(0))
    assert sent.seqs() == [[0]]  # not held back for the window
    for seq in range(1, 5):
        await coalescer.add(chunk(seq))
    assert sent.seqs() == [[0]]  # within the window: waiting
    await coalescer.close()
    assert sent.seqs() == [[0], [1, 2, 3, 4]]
    assert sent.frames[1].WhichOneof("frame") == "chunks"
    await coalescer.close()  # nothing left: no empty frame
    assert coalescer.frames == 2


async def test_a_batch_at_the_size_bound_is_sent_without_waiting() -> None:
    sent = Recorder()
    size = chunk(1, "x" * 15).ByteSize()
    coalescer = ChunkCoalescer(sent, window_s=60.0, max_bytes=2 * size)
    await coalescer.add(chunk(0))
    for seq in range(1, 7):
        await coalescer.add(chunk(seq, "x" * 15))  # every second one reaches the bound
    assert sent.seqs() == [[0], [1, 2], [3, 4], [5, 6]]


async def test_the_window_flushes_on_its_own_and_order_is_kept() -> None:
    sent = Recorder()
    coalescer = ChunkCoalescer(sent, window_s=0.001, max_bytes=1 << 20)
    await coalescer.add(chunk(0))
    sent.sent.clear()
    await coalescer.add(chunk(1))
    await coalescer.add(chunk(2))
    await asyncio.wait_for(sent.sent.wait(), 10)  # the timer's flush, with no further chunk
    await coalescer.add(chunk(3))
    await coalescer.close()
    assert sent.seqs() == [[0], [1, 2], [3]]


async def test_a_window_of_zero_sends_each_chunk_alone() -> None:
    sent = Recorder()
    coalescer = ChunkCoalescer(sent, window_s=0, max_bytes=1 << 20)
    for seq in range(3):
        await coalescer.add(chunk(seq))
    await coalescer.close()
    assert [f.WhichOneof("frame") for f in sent.frames] == ["chunk"] * 3


CATALOG = build_catalog(
    {
        "demo": {"enabled": False},
        "deployments": [
            {"id": "talk", "provider": "demo", "model": "talk", "options": {"latency_ms": 1}},
            # One output token costs 1 USD: a hold of 3.5 USD stops the stream after 3 chunks.
            {
                "id": "dear",
                "provider": "demo",
                "model": "dear",
                "options": {"latency_ms": 1},
                "price": {"input": 0, "output": 1_000_000},
            },
        ],
    },
    {},
)


def dispatch_for(inbox: str, deployment: str, request_id: str) -> invoke_pb2.Dispatch:
    dispatch = invoke_pb2.Dispatch(reply_to=inbox, max_attempts=1)
    dispatch.request.request_id = request_id
    dispatch.request.model = deployment
    dispatch.request.stream = True
    dispatch.request.max_tokens = 8
    dispatch.request.messages.add(role=invoke_pb2.ROLE_USER).content.add(text="tell me more")
    dispatch.request.deadline_unix_ms = int(time.time() * 1000) + 30_000
    dispatch.chain.add(deployment_id=deployment, provider="demo", model=deployment)
    return dispatch


async def read_frames(sub: nats.aio.subscription.Subscription) -> list[invoke_pb2.Reply]:
    frames = []
    for _ in range(100):
        frame = invoke_pb2.Reply.FromString((await sub.next_msg(timeout=10)).data)
        frames.append(frame)
        if frame.WhichOneof("frame") in ("final", "error"):
            return frames
    raise AssertionError("no final or error frame")


def texts(frames: list[invoke_pb2.Reply]) -> list[str]:
    out = []
    for frame in frames:
        if frame.WhichOneof("frame") == "chunk":
            out.append(frame.chunk.delta_text)
        elif frame.WhichOneof("frame") == "chunks":
            out.extend(c.delta_text for c in frame.chunks.chunks)
    return out


async def test_a_worker_sends_fewer_frames_than_chunks_and_ends_with_the_final(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    # A window longer than the stream: every chunk after the first waits for the stream's end.
    settings = Settings(
        nats_url=nats_server.url, data_dir=tmp_path, stream_coalesce_ms=1000, demo_chunk_delay_ms=1
    )
    worker = ProviderWorker(settings, CATALOG, providers=["demo"])
    await worker.start()
    nc = await nats.connect(nats_server.url)
    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.flush()  # the worker answers on its own connection: the server must know the inbox
        await worker.execute(dispatch_for(inbox, "talk", "req_batched"))
        frames = await read_frames(sub)
        kinds = [f.WhichOneof("frame") for f in frames]
        # Normally ["chunk", "chunks", "final"]; a machine that stalls this process for the
        # whole window may split the batch, never reorder it or send the first chunk late.
        assert kinds[0] == "chunk" and kinds[-1] == "final" and set(kinds[1:-1]) == {"chunks"}
        assert len(frames) < 8 + 1  # fewer messages than chunks (+ the final)
        words = texts(frames)
        seqs = [c.seq for f in frames[1:-1] for c in f.chunks.chunks]
        assert len(words) == 8 and seqs == list(range(1, 8))
        assert "".join(words) == frames[-1].final.message.content[0].text
    finally:
        await nc.close()
        await worker.drain()


async def test_chunks_waiting_at_the_budget_stop_reach_the_client_before_the_error(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    settings = Settings(
        nats_url=nats_server.url, data_dir=tmp_path, stream_coalesce_ms=1000, demo_chunk_delay_ms=1
    )
    worker = ProviderWorker(settings, CATALOG, providers=["demo"])
    await worker.start()
    nc = await nats.connect(nats_server.url)
    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.flush()  # the worker answers on its own connection: the server must know the inbox
        dispatch = dispatch_for(inbox, "dear", "req_stopped")
        dispatch.reserved_usd = "3.5"
        await worker.execute(dispatch)
        frames = await read_frames(sub)
        kinds = [f.WhichOneof("frame") for f in frames]
        assert kinds[0] == "chunk" and kinds[-1] == "error" and set(kinds[1:-1]) == {"chunks"}
        assert len(texts(frames)) == 3  # the two waiting chunks were sent, before the error
        assert frames[-1].error.code == "budget_exceeded"
    finally:
        await nc.close()
        await worker.drain()


def test_a_batch_renders_as_the_same_events_as_its_chunks_one_by_one() -> None:
    request = invoke_pb2.InvokeRequest(request_id="req_r", model="m", stream=True)
    chunks = [chunk(0, "a"), chunk(1, " b"), chunk(2, " c")]
    one_by_one = ChunkStream(request, include_usage=False)
    expected = [e for c in chunks for e in one_by_one(invoke_pb2.Reply(chunk=c))]
    batched = ChunkStream(request, include_usage=False)
    got = batched(invoke_pb2.Reply(chunk=chunks[0]))
    got += batched(invoke_pb2.Reply(chunks=invoke_pb2.ChunkBatch(chunks=chunks[1:])))
    assert got == expected and len(got) >= len(chunks)  # the role opening, then one per chunk


def test_a_text_event_from_the_template_is_the_event_the_dict_renders() -> None:
    from services.ingress.api_kit import sse_data

    for include_usage in (False, True):
        request = invoke_pb2.InvokeRequest(
            request_id="req_t", model="m/x", stream=True, received_unix_ms=1.7e12
        )
        render = ChunkStream(request, include_usage=include_usage)
        for text in ['say "hi" \\ \n\t', "ünï 中文 🎉", "\ue000", "</script>", " word"]:
            assert render._text_event(text) == sse_data(render._chunk({"content": text})), text
