"""How a worker reads a provider's stream: SSE parsed a whole read at a time (sse.SSEReader), the
upstream left unread while the coalescer holds chunks back anyway (upstream.hold_reading), and
batch frames joined from chunks serialized once (coalesce.batch_frame).

First the pure parts against their references: the reader finds the events the line-by-line
decoder finds, however the body is cut into reads; every adapter's translator gives the same
chunks, usage and errors from the fakes' real wire formats cut at every byte (inside a UTF-8
character, between a CR and its LF); a batch frame is the bytes protobuf writes. Then the I/O:
a real local HTTP server writes the fakes' bodies in awkward pieces, and each adapter streams them
through a pace that holds every read, with the same result; a stalled upstream still times out;
a cancel, a dropped connection and the body's end each end a hold at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from services.providers.adapters import adapter_for
from services.providers.adapters.base import Completed
from services.providers.coalesce import ChunkCoalescer, batch_frame
from services.providers.sse import LineSplitter, SSEDecoder, SSEEvent, SSEReader
from services.providers.upstream import HttpAdapter, StreamTranslator, hold_reading
from switchyard.catalog import Deployment, Timeouts
from switchyard.errors import ErrorCode, GatewayError
from switchyard.settings import Settings
from switchyard.v1 import invoke_pb2
from switchyard.vocab import Api
from tests.fakes.anthropic import AnthropicFake
from tests.fakes.base import Behavior, FakeUpstream
from tests.fakes.gemini import GeminiFake
from tests.fakes.mistral import MistralFake
from tests.fakes.openai import OpenAIFake

# --- the reader against the line-by-line reference ---


def reference_events(reads: list[bytes]) -> list[SSEEvent]:
    """What the line-by-line decoder makes of the same reads."""
    splitter, decoder = LineSplitter(), SSEDecoder()
    events = [e for read in reads for line in splitter.feed(read) if (e := decoder.feed(line)) is not None]
    events += [e for line in splitter.flush() if (e := decoder.feed(line)) is not None]
    last = decoder.flush()
    return [*events, last] if last else events


def reader_events(reads: list[bytes]) -> list[SSEEvent]:
    reader = SSEReader()
    return [e for read in reads for e in reader.feed(read)] + reader.flush()


def awkward_points(body: bytes, near: bytes) -> list[int]:
    """Where a cut is hardest: inside a multi-byte character, and around (or inside) each `near`."""
    points = {i for i in range(1, len(body)) if body[i] & 0xC0 == 0x80}  # a UTF-8 continuation byte
    at = body.find(near)
    while at >= 0:
        points.update(range(max(at - 1, 0), min(at + len(near) + 2, len(body) + 1)))
        at = body.find(near, at + 1)
    return sorted(points)


def cut(body: bytes, points: Iterable[int]) -> list[bytes]:
    """`body` as the reads that end at `points` (any order, repeats and empty reads allowed)."""
    edges = [0, *sorted(min(p, len(body)) for p in points), len(body)]
    return [body[a:b] for a, b in itertools.pairwise(edges)]


SSE_LINES = st.sampled_from(
    [
        'data: {"a": 1}',
        "data: café ☕",
        "data:tight",
        "data",
        "data: ",
        "data: [DONE]",
        "event: content_block_delta",
        "event: ping",
        "id: 9",
        ": keep-alive",
        "retry: 5",
        "unknown: x",
        "",
        "",
        "",
    ]
)


@given(
    lines=st.lists(SSE_LINES, max_size=40),
    ending=st.sampled_from(["\n", "\r\n", "\r"]),
    fractions=st.lists(st.floats(min_value=0, max_value=1), max_size=10),
    last_ending=st.booleans(),
)
def test_the_one_pass_reader_finds_the_events_the_line_decoder_finds(
    lines: list[str], ending: str, fractions: list[float], last_ending: bool
) -> None:
    body = ending.join(lines).encode() + (ending.encode() if last_ending else b"")
    reads = cut(body, [int(f * len(body)) for f in fractions])
    assert reader_events(reads) == reference_events(reads)
    assert reader_events(reads) == reference_events([body])  # the cuts change nothing


def test_three_line_endings_in_a_row_lose_no_event() -> None:
    """A blank line of its own at a block's edge: its event is still dispatched."""
    for body in (b"data: a\n\n\ndata: b\n\n", b"data: a\r\n\r\n\r\nid: 1\ndata: b\n\n", b"data: a\n\n\n"):
        assert [e.data for e in reader_events([body])] == [e.data for e in reference_events([body])]
    assert [e.data for e in reader_events([b"data: a\n\n\n"])] == ["a"]
    assert [e.data for e in reader_events([b"data: a\n\n\ndata: b\n\n"])] == ["a", "b"]


def test_a_whole_window_of_events_comes_from_one_read() -> None:
    reader = SSEReader()
    window = b"".join(b'data: {"n": %d}\n\n' % n for n in range(20)) + b'data: {"n": 2'
    assert [e.data for e in reader.feed(window)] == [f'{{"n": {n}}}' for n in range(20)]
    assert reader.feed(b"0}\r") == []  # the CR may be half of a CRLF
    assert reader.feed(b"\n\r\n") == [SSEEvent("message", '{"n": 20}')]
    assert reader.feed("event: x\ndata: é".encode()[:-1]) == []  # inside the é
    assert reader.flush() == [SSEEvent("x", "\ufffd")]  # a cut character at the end is replaced
    assert reader.flush() == []


def test_named_events_multi_line_data_and_the_last_id() -> None:
    body = b"id: 7\nevent: message_start\ndata: {}\n\n: ping\n\ndata: one\ndata: two\n\ndata: x"
    assert reader_events([body]) == [
        SSEEvent("message_start", "{}", "7"),
        SSEEvent("message", "one\ntwo", "7"),
        SSEEvent("message", "x", "7"),  # no blank line at the end: still an event
    ]


# --- every adapter, from its fake's real wire format, at every byte boundary ---

TEXT = "Olá, café ☕ — naïve 日本語 test."


def stream_request(api: str = "", **fields: Any) -> invoke_pb2.InvokeRequest:
    request = invoke_pb2.InvokeRequest(model="m", stream=True, max_tokens=50, api=api, **fields)
    request.messages.add(role=invoke_pb2.ROLE_USER).content.add(text="Say something.")
    return request


def responses_request() -> invoke_pb2.InvokeRequest:
    body = {"model": "m", "input": "Say something.", "stream": True}
    return stream_request(api=Api.RESPONSES, responses_json=orjson.dumps(body).decode())


class Wire:
    """One provider's stream: its adapter, its request and the bytes its fake would send."""

    def __init__(
        self,
        name: str,
        adapter: str,
        fake: FakeUpstream,
        request: Callable[[], invoke_pb2.InvokeRequest] = stream_request,
        frames: str = "stream_frames",
        error_frame: str = "stream_error_frame",
    ) -> None:
        self.name, self.adapter_name, self.fake = name, adapter, fake
        self.request, self.frames, self.error_frame = request, frames, error_frame

    def adapter(self, base_url: str = "http://127.0.0.1:9", timeouts: Timeouts | None = None) -> HttpAdapter:
        deployment = Deployment(
            id=f"{self.name}/m",
            provider=self.name,
            model="m",
            adapter=self.adapter_name,
            base_url=base_url,
            api_key="k",
            timeouts=timeouts or Timeouts(),
        )
        adapter = adapter_for(deployment, Settings())
        assert isinstance(adapter, HttpAdapter)
        return adapter

    def body(self, behavior: Behavior, crlf: bool = False) -> bytes:
        """The body the fake sends for `behavior` (its faults too: an in-band error or a malformed
        event after some content events, as its `_play` does)."""
        adapter = self.adapter()
        request = self.request()
        body = adapter.body(request, stream=True)
        usage = self.fake.usage_for(body, behavior)
        frames = getattr(self.fake, self.frames)(body, "m", behavior, usage)
        out, sent = b"", 0
        for frame in frames:
            if (
                frame.content
                and behavior.error_event_after is not None
                and sent >= behavior.error_event_after
            ):
                out += getattr(self.fake, self.error_frame)(behavior)
                break
            if frame.content and behavior.malformed_after is not None and sent >= behavior.malformed_after:
                out += b'data: {"choices": [{"delta": {"content": "unterminated\n\n'
                break
            sent += frame.content
            out += frame.data
        # The JSON payloads hold no raw line ending, so every LF is a line ending.
        return out.replace(b"\n", b"\r\n") if crlf else out


WIRES = [
    Wire("openai", "openai", OpenAIFake()),
    Wire("responses", "openai", OpenAIFake(), responses_request, "response_frames", "response_error_frame"),
    Wire("anthropic", "anthropic", AnthropicFake()),
    Wire("gemini", "gemini", GeminiFake()),
    Wire("mistral", "mistral", MistralFake()),
]
BEHAVIORS = {
    "text": Behavior(text=TEXT),
    "tool": Behavior(tool_call=("lookup", {"q": "café ☕", "n": 3})),
    "in-band error": Behavior(text=TEXT, error_event_after=2),
    "malformed": Behavior(text=TEXT, malformed_after=3),
}


def outcome(translator: StreamTranslator, events: list[SSEEvent]) -> list[Any]:
    """What `HttpAdapter.stream` yields for these events: the items up to the terminal event,
    then the Completed, or the error it raises (as code and message)."""
    out: list[Any] = []
    try:
        for event in events:
            out += translator.feed(event)
            if translator.done:
                break
        out.append(translator.result())
    except GatewayError as exc:
        out.append((exc.code, str(exc)))
    return out


def test_the_outcome_compares_chunks_usage_and_errors() -> None:
    """The comparison below can fail: a changed chunk, usage or error is told apart."""
    wire = WIRES[0]
    body = wire.body(BEHAVIORS["text"])
    whole = outcome(wire.adapter().stream_translator(wire.request()), reference_events([body]))
    assert any(isinstance(item, invoke_pb2.Chunk) for item in whole)
    assert isinstance(whole[-1], Completed) and whole[-1].usage.completion_tokens > 0
    less = outcome(wire.adapter().stream_translator(wire.request()), reference_events([body])[:-3])
    assert less != whole
    other = wire.body(Behavior(text=TEXT.replace("é", "e")))
    assert outcome(wire.adapter().stream_translator(wire.request()), reference_events([other])) != whole


@pytest.mark.parametrize("behavior", BEHAVIORS, ids=list(BEHAVIORS))
@pytest.mark.parametrize("wire", WIRES, ids=[w.name for w in WIRES])
@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
def test_every_adapter_gets_the_same_stream_however_its_body_is_cut(
    wire: Wire, behavior: str, crlf: bool
) -> None:
    body = wire.body(BEHAVIORS[behavior], crlf)
    adapter, request = wire.adapter(), wire.request()
    expected = outcome(adapter.stream_translator(request), reference_events([body]))
    assert len(expected) > 2
    if behavior in ("in-band error", "malformed"):
        assert isinstance(expected[-1], tuple)
    else:
        assert isinstance(expected[-1], Completed)
    events = reader_events([body])
    assert outcome(adapter.stream_translator(request), events) == expected
    # The translator sees only the events, so the same events are the same stream.
    # Two reads, cut at every byte of the CRLF body; of the LF one, around every line ending and
    # inside every multi-byte character (the same cuts, without the CRs, and half the time).
    points = range(len(body) + 1) if crlf else awkward_points(body, near=b"\n")
    for at in points:
        assert reader_events(cut(body, [at])) == events, at
    one_by_one = [body[i : i + 1] for i in range(len(body))]
    assert outcome(adapter.stream_translator(request), reader_events(one_by_one)) == expected


# --- batch frames ---


@pytest.mark.parametrize("sizes", [[], [0], [1, 2, 3], [200], [126, 127, 128], [20_000, 5], [70_000]])
def test_a_joined_batch_frame_is_the_bytes_protobuf_writes(sizes: list[int]) -> None:
    chunks = [
        invoke_pb2.Chunk(seq=n, delta_text="é" * (size // 2) + "x" * (size % 2))
        for n, size in enumerate(sizes)
    ]
    expected = invoke_pb2.Reply(chunks=invoke_pb2.ChunkBatch(chunks=chunks)).SerializeToString()
    assert batch_frame([c.SerializeToString() for c in chunks]) == expected
    assert list(invoke_pb2.Reply.FromString(expected).chunks.chunks) == chunks


async def test_the_coalescer_holds_reads_only_while_chunks_wait() -> None:
    sent: list[bytes] = []

    async def publish(frame: bytes) -> None:
        sent.append(frame)

    coalescer = ChunkCoalescer(publish, window_s=60.0, max_bytes=1 << 20)
    assert coalescer.hold_s() == 0  # nothing waits: read at once (the first chunk is never held)
    await coalescer.add(invoke_pb2.Chunk(seq=0, delta_text="a"))
    assert coalescer.hold_s() == 0  # the first chunk went out at once
    await coalescer.add(invoke_pb2.Chunk(seq=1, delta_text="b"))
    assert 59 < coalescer.hold_s() < 60  # until just before the batch is due
    await coalescer.close()
    assert coalescer.hold_s() == 0
    assert [invoke_pb2.Reply.FromString(f).WhichOneof("frame") for f in sent] == ["chunk", "chunks"]
    unpaced = ChunkCoalescer(publish, window_s=0, max_bytes=1 << 20)
    for seq in range(3):
        await unpaced.add(invoke_pb2.Chunk(seq=seq))
        assert unpaced.hold_s() == 0


# --- over a real connection ---


class Hold:
    """A pace that holds before every read (harsher than the coalescer, which holds only
    while a batch waits)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.asked = 0

    def hold_s(self) -> float:
        self.asked += 1
        return self.seconds


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[int]:
    """`app` on a free loopback port for the `with` body; yields the port."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def upstream(
    pieces: list[bytes], gap_s: float = 0.001, stall: bool = False, drop: bool = False
) -> AsyncIterator[str]:
    """A local HTTP server answering any POST with `pieces`, written apart (then a stall that
    lasts until the server stops, or the connection dropped mid-body)."""
    stopping = asyncio.Event()

    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for piece in pieces:
            await response.write(piece)
            await asyncio.sleep(gap_s)
        if stall:
            await stopping.wait()
        if drop:
            assert request.transport is not None
            request.transport.close()
            return response
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/{tail:.*}", answer)
    async with serving(app) as port:
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            stopping.set()


def awkward_pieces(body: bytes) -> list[bytes]:
    """Cut inside every multi-byte character and between every CR and LF, and every 37 bytes."""
    return cut(body, sorted(set(awkward_points(body, near=b"\r\n")) | set(range(37, len(body), 37))))


async def collect(adapter: HttpAdapter, request: invoke_pb2.InvokeRequest, pace: Hold | None) -> list[Any]:
    out: list[Any] = []
    try:
        async with contextlib.aclosing(adapter.stream(request, pace)) as items:
            async for item in items:
                out.append(item)
    except GatewayError as exc:
        out.append((exc.code, str(exc)))
    return out


@pytest.mark.parametrize("behavior", ["text", "in-band error"])
@pytest.mark.parametrize("wire", WIRES, ids=[w.name for w in WIRES])
async def test_a_paced_stream_over_http_yields_what_the_events_make(wire: Wire, behavior: str) -> None:
    body = wire.body(BEHAVIORS[behavior], crlf=True)
    request = wire.request()
    expected = outcome(wire.adapter().stream_translator(request), reference_events([body]))
    async with upstream(awkward_pieces(body)) as url:
        adapter = wire.adapter(url)
        try:
            pace = Hold(0.01)
            assert await collect(adapter, request, pace) == expected
            assert pace.asked > 1
            assert await collect(adapter, request, None) == expected
        finally:
            await adapter.aclose()


async def test_a_stalled_upstream_times_out_between_chunks_while_paced() -> None:
    wire = WIRES[0]
    body = wire.body(BEHAVIORS["text"])
    async with upstream([body[: len(body) // 2]], stall=True) as url:
        adapter = wire.adapter(url, Timeouts(between_chunks_s=0.3))
        try:
            items = await asyncio.wait_for(collect(adapter, wire.request(), Hold(0.02)), 30)
        finally:
            await adapter.aclose()
    assert any(isinstance(i, invoke_pb2.Chunk) for i in items)
    code, message = items[-1]
    assert code == ErrorCode.TIMEOUT and "between chunks" in message


async def test_a_cancel_during_a_hold_lands_at_once() -> None:
    """Paced as the worker paces it, by a coalescer (here with a 600 s window): after the first
    chunk went out, the reader holds until the batch is due; the client leaving cancels it."""
    wire = WIRES[0]
    body = wire.body(BEHAVIORS["text"])
    async with upstream([body[: len(body) // 2]], stall=True) as url:
        adapter = wire.adapter(url)
        sent: list[bytes] = []
        holding = asyncio.Event()

        async def publish(frame: bytes) -> None:
            sent.append(frame)

        async def consume() -> None:
            chunks = ChunkCoalescer(publish, window_s=600.0, max_bytes=1 << 20)
            async with contextlib.aclosing(adapter.stream(wire.request(), chunks)) as items:
                async for item in items:
                    if not isinstance(item, invoke_pb2.Chunk):
                        continue
                    await chunks.add(item)
                    if chunks.hold_s() > 0:
                        holding.set()

        task = asyncio.ensure_future(consume())
        try:
            await asyncio.wait_for(holding.wait(), 30)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 30)  # not the 600 s of the hold
        finally:
            await adapter.aclose()
    assert len(sent) == 1  # the first chunk went out at once; the rest waited for the window


async def test_a_connection_dropped_during_a_hold_ends_it_with_the_error() -> None:
    """Paced by a coalescer with a 600 s window: the break ends the hold, and the stream its
    error, at once. (What came in the same hold as the break is lost with it: aiohttp raises a
    broken body's error before handing out what it buffered.)"""
    wire = WIRES[0]
    body = wire.body(BEHAVIORS["text"])
    events = body.split(b"\n\n")
    head = b"\n\n".join(events[:3]) + b"\n\n"  # the role event and two words
    async with upstream([head, body[len(head) : len(body) * 3 // 4]], gap_s=0.2, drop=True) as url:
        adapter = wire.adapter(url)
        sent: list[bytes] = []

        async def publish(frame: bytes) -> None:
            sent.append(frame)

        chunks = ChunkCoalescer(publish, window_s=600.0, max_bytes=1 << 20)
        try:
            with pytest.raises(GatewayError) as caught:
                async with asyncio.timeout(30):  # not the 600 s of the hold
                    async with contextlib.aclosing(adapter.stream(wire.request(), chunks)) as items:
                        async for item in items:
                            if isinstance(item, invoke_pb2.Chunk):
                                await chunks.add(item)
        finally:
            await adapter.aclose()
    assert caught.value.code == ErrorCode.UPSTREAM_ERROR and "mid-stream" in str(caught.value)
    await chunks.close()
    assert [invoke_pb2.Reply.FromString(f).WhichOneof("frame") for f in sent] == ["chunk", "chunks"]


async def test_a_hold_gathers_what_arrives_and_ends_with_the_body() -> None:
    """What the upstream writes during a hold is taken by the next read, all of it at once; the
    body's end ends the hold (the stream's last batch does not wait it out)."""
    written, finish = asyncio.Event(), asyncio.Event()

    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: 0\n\n")
        for n in range(1, 21):
            await asyncio.sleep(0.001)
            await response.write(b"data: %d\n\n" % n)
        written.set()
        await finish.wait()
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/", answer)
    async with serving(app) as port:
        try:
            async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/") as resp:
                first = await resp.content.readany()
                while not first.endswith(b"\n\n"):
                    first += await resp.content.readany()
                hold = asyncio.ensure_future(hold_reading(resp, 600.0))
                await asyncio.wait_for(written.wait(), 30)
                await asyncio.sleep(0.05)
                assert not hold.done()  # all 20 events came, and the hold goes on
                finish.set()
                await asyncio.wait_for(hold, 30)  # the body's end ended it, not its 600 s
                rest = await resp.content.readany()  # everything that came, in one read
                assert await resp.content.readany() == b""
        finally:
            finish.set()
    reader = SSEReader()
    assert [e.data for e in reader.feed(first) + reader.feed(rest)] == [str(n) for n in range(21)]
