"""A fast fake OpenAI-compatible upstream with a fixed delay, for benchmarks.

A raw asyncio protocol on uvloop, not a web framework: the upstream must cost next to nothing
so that what the benchmark measures is the gateway. It answers POST /v1/chat/completions in
OpenAI's wire format (chat.completion with usage; or chat.completion.chunk SSE events, a usage
chunk when stream_options.include_usage is set, then `data: [DONE]`).

With `--slow-every N --slow-ms M`, every Nth request (counted over the whole server) waits M ms
more before its response starts: a first token that is sometimes late (bench/hedge.py).

Run: python -m bench.upstream --port 9100 --delay-ms 20
"""

from __future__ import annotations

import argparse
import asyncio
import time

import orjson
import uvloop

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog"]


def completion_body(model: str, words: int) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": " ".join(WORDS[i % len(WORDS)] for i in range(words)),
                    },
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": words, "total_tokens": 12 + words},
        }
    )


def chunk_event(model: str, delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:
    payload = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage:
        payload["usage"] = usage
    data = b"data: " + orjson.dumps(payload) + b"\n\n"
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


class SlowEvery:
    """Which requests are late: every `every`th one (0: none), by `extra_s`."""

    def __init__(self, every: int = 0, extra_s: float = 0.0) -> None:
        self.every = every
        self.extra_s = extra_s
        self.count = 0

    def next_delay(self) -> float:
        self.count += 1
        return self.extra_s if self.every and self.count % self.every == 0 else 0.0


class UpstreamProtocol(asyncio.Protocol):
    def __init__(
        self, delay_s: float, chunk_delay_s: float, words: int, slow: SlowEvery | None = None
    ) -> None:
        self.slow = slow or SlowEvery()
        self.delay_s = delay_s
        self.chunk_delay_s = chunk_delay_s
        self.words = words
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            total = head_end + 4 + length
            if len(self.buffer) < total:
                return
            body = self.buffer[head_end + 4 : total]
            self.buffer = self.buffer[total:]
            asyncio.get_running_loop().create_task(self.respond(body))

    async def respond(self, body: bytes) -> None:
        assert self.transport is not None
        try:
            request = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            request = {}
        model = str(request.get("model", "bench"))
        await asyncio.sleep(self.delay_s + self.slow.next_delay())
        if self.transport.is_closing():
            return
        if not request.get("stream"):
            payload = completion_body(model, self.words)
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(payload)).encode()
                + b"\r\n\r\n"
                + payload
            )
            return
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        self.transport.write(chunk_event(model, {"role": "assistant", "content": ""}))
        for i in range(self.words):
            if i and self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
            if self.transport.is_closing():
                return
            self.transport.write(chunk_event(model, {"content": (" " if i else "") + WORDS[i % len(WORDS)]}))
        self.transport.write(chunk_event(model, {}, finish="stop"))
        if (request.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 12, "completion_tokens": self.words, "total_tokens": 12 + self.words}
            self.transport.write(chunk_event(model, {}, usage=usage))
        done = b"data: [DONE]\n\n"
        self.transport.write(f"{len(done):x}\r\n".encode() + done + b"\r\n0\r\n\r\n")


async def serve(
    host: str, port: int, delay_ms: float, chunk_delay_ms: float, words: int, slow: SlowEvery | None = None
) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: UpstreamProtocol(delay_ms / 1000, chunk_delay_ms / 1000, words, slow),
        host,
        port,
        backlog=4096,
    )
    print(f"upstream listening on http://{host}:{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--chunk-delay-ms", type=float, default=1.0)
    parser.add_argument("--words", type=int, default=16)
    parser.add_argument("--slow-every", type=int, default=0, help="every Nth request is late (0: none)")
    parser.add_argument("--slow-ms", type=float, default=0.0, help="how late")
    args = parser.parse_args()
    slow = SlowEvery(args.slow_every, args.slow_ms / 1000)
    uvloop.run(serve(args.host, args.port, args.delay_ms, args.chunk_delay_ms, args.words, slow))


if __name__ == "__main__":
    main()
