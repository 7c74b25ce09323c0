"""Chunk coalescing between a worker and the ingress: fewer bus messages per stream.

Each bus message costs both processes a NATS protocol parse, a loop turn and a protobuf decode,
far more than one chunk's own work, so a stream that sends each chunk as its own message pays
that per token. A `ChunkCoalescer` sends the first chunk of a stream at once (time to first
token is never delayed) and gathers the later ones into `ChunkBatch` frames, flushed when the
oldest waiting chunk is `window_s` old or the batch reaches `max_bytes`, whichever comes first.

Order is kept: a batch goes out before anything sent after it (a timer flush still in progress
is awaited before the next send), and `close` sends what is waiting before the stream's final
or error frame, which the worker publishes only after the upstream call returned. A window of
0 sends every chunk as its own frame (the behaviour before coalescing).

Each chunk is serialized once when it is added, and a batch frame is those bytes joined under
the `Reply` and `ChunkBatch` tags (`batch_frame`: the bytes protobuf writes, without copying every
chunk into a batch message first).

It is also the upstream reader's pace (`hold_s`, adapters/base.py `ReadPace`): while chunks wait
for their window, the reader leaves the upstream body unread until just before the flush
(upstream.py `hold_reading`), so a window's tokens reach the worker in one read instead of one
wake-up each. Nothing waits before the first chunk, so it is never held. On a loaded loop a read
that resumes after the timer's flush joins the next batch: a token may then wait up to two
windows instead of one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from switchyard import codec
from switchyard.v1 import invoke_pb2

Publish = Callable[[bytes], Awaitable[None]]

# The reader resumes this long before a batch is due (at most a quarter of the window), so what
# arrived during the hold is read and joins the batch before the timer sends it.
READ_LEAD_S = 0.002
# Field tags (field number << 3 | length-delimited) of Reply.chunks and ChunkBatch.chunks.
_REPLY_CHUNKS_TAG = bytes([4 << 3 | 2])
_BATCH_CHUNK_TAG = bytes([1 << 3 | 2])


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def batch_frame(serialized_chunks: list[bytes]) -> bytes:
    """`Reply(chunks=ChunkBatch(chunks=...))` serialized, from chunks already serialized."""
    batch = b"".join([_BATCH_CHUNK_TAG + _varint(len(c)) + c for c in serialized_chunks])
    return _REPLY_CHUNKS_TAG + _varint(len(batch)) + batch


class ChunkCoalescer:
    """One stream's chunks on their way to its reply subject."""

    __slots__ = (
        "_due",
        "_first_sent",
        "_lead_s",
        "_loop",
        "_pending",
        "_publish",
        "_sending",
        "_size",
        "_timer",
        "frames",
        "max_bytes",
        "window_s",
    )

    def __init__(self, publish: Publish, window_s: float, max_bytes: int) -> None:
        self._publish = publish
        self.window_s = window_s
        self.max_bytes = max_bytes
        self._pending: list[bytes] = []  # serialized chunks
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0  # loop time the waiting chunks are sent at (with a timer set)
        self._lead_s = min(READ_LEAD_S, window_s / 4)
        self._loop = asyncio.get_running_loop()
        self._sending: asyncio.Future[None] | None = None  # a timer's flush, until it is sent
        self._first_sent = False
        self.frames = 0  # frames sent (the benchmark and tests read it)

    async def add(self, chunk: invoke_pb2.Chunk) -> None:
        if not self._first_sent or self.window_s <= 0:
            self._first_sent = True
            await self._send(codec.chunk_frame(chunk))
            return
        data = chunk.SerializeToString()
        self._pending.append(data)
        self._size += len(data)
        if self._size >= self.max_bytes:
            await self.flush()
        elif self._timer is None:
            self._due = self._loop.time() + self.window_s
            self._timer = self._loop.call_at(self._due, self._on_timer)

    def hold_s(self) -> float:
        """How long the upstream may go unread: until just before the waiting chunks are sent
        (0 when none wait, so a chunk after a pause is read, and the first one sent, at once)."""
        if self._timer is None:
            return 0.0
        return self._due - self._lead_s - self._loop.time()

    async def flush(self) -> None:
        """Send what is waiting now, after any timer flush still in progress."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        sending, self._sending = self._sending, None
        if sending is not None:
            await sending  # in order, and its error (a lost connection) is not left unread
        if self._pending:
            await self._send(self._take())

    async def close(self) -> None:
        """The upstream call ended (answer, error, budget stop or cancel): send what is
        waiting, so it reaches the client before the stream's last frame."""
        await self.flush()

    def _on_timer(self) -> None:
        self._timer = None
        if self._pending:
            # nats-py's publish appends to its buffer in its first step, so the task's frame
            # is ordered once it runs; `flush` awaits it before sending anything after it.
            self._sending = asyncio.ensure_future(self._send(self._take()))

    def _take(self) -> bytes:
        frame = batch_frame(self._pending)
        self._pending = []
        self._size = 0
        return frame

    async def _send(self, frame: bytes) -> None:
        self.frames += 1
        await self._publish(frame)
