"""What every fake upstream shares: behaviour scripting, fault injection, request recording, the
control API, and running on a free loopback port (in a thread of the test process).

Behaviour for a request is chosen in this order: a one-shot queued with `behave(..., times=n)`
(first in, first out), then the behaviour set for its model, then the default.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

STALL_S = 30.0  # a stalled stream sends nothing for this long (the gateway's timeout fires first)


@dataclass
class Behavior:
    """How the fake answers one request. Every field has a harmless default."""

    text: str = "Hello from the fake upstream."
    # Answer with a tool call instead of text: (tool name, arguments object).
    tool_call: tuple[str, dict[str, Any]] | None = None
    # Usage to report; None = derived from the request (prompt) and the reply (completion).
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int = 0
    cache_write_tokens: int = 0  # Anthropic: written to the prompt cache (part of the prompt)
    cache_write_1h_tokens: int = 0  # of those, written with the 1-hour TTL
    reasoning_tokens: int = 0  # OpenAI / Gemini: hidden reasoning (part of the completion)
    finish: str | None = None  # provider-native finish reason; None = the natural one
    # Timing.
    delay_s: float = 0.0  # before the response headers
    chunk_delay_s: float = 0.0  # between streamed content events
    # Errors: a status >= 400 answers with the provider's real error body for that status.
    status: int = 200
    error_type: str | None = None  # override the provider's error type for the status
    error_message: str = "fake upstream error"
    retry_after: str | None = None  # Retry-After header value, sent with error statuses
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers
    # Stream faults, counted in content events (text or tool deltas) already sent:
    malformed_after: int | None = None  # then one event whose data is not JSON
    disconnect_after: int | None = None  # then the connection is dropped mid-body
    stall_after: int | None = None  # then nothing for STALL_S seconds
    error_event_after: int | None = None  # then the provider's in-stream error event
    invalid_json_body: bool = False  # a 200 whose body is not JSON (non-streaming)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Behavior:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown behaviour fields: {sorted(unknown)}")
        data = dict(data)
        if data.get("tool_call") is not None:
            data["tool_call"] = tuple(data["tool_call"])
        return cls(**data)


@dataclass
class Recorded:
    """One request as the fake received it, and how its answer ended."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    model: str
    stream: bool
    usage: dict[str, int] = field(default_factory=dict)  # what the fake reported
    outcome: str = "pending"  # ok | error | cut | stalled | malformed | client_disconnected
    at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Frame:
    data: bytes
    content: bool = False  # counts for the *_after fault triggers


class _Cut(Exception):
    """Raised inside a streaming body: uvicorn drops the connection mid-response."""


def pieces(text: str) -> list[str]:
    """The reply split the way it is streamed: one word (with its trailing space) per event."""
    return re.findall(r"\S+\s*", text) or [text]


def fake_vector(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector for `text` (float32-exact values: multiples of 1/1024)."""
    raw = hashlib.sha256(text.encode()).digest() * (dimensions // 32 + 1)
    values = [(raw[i] - 127.5) / 128 for i in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values))
    return [round(v / norm * 1024) / 1024 for v in values]


def text_tokens(text: str) -> int:
    """The fakes' tokenizer: about four characters a token, at least one."""
    return max(1, len(text) // 4)


def sse(data: Any, event: str | None = None) -> bytes:
    payload = data if isinstance(data, bytes) else orjson.dumps(data)
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + payload + b"\n\n"


class FakeUpstream:
    """Subclasses speak one provider's wire format (see openai.py, anthropic.py, gemini.py,
    mistral.py). Construct, `start()`, point a deployment's base_url at `base_url`, `stop()`."""

    provider = "fake"

    def __init__(
        self,
        default: Behavior | None = None,
        models: dict[str, Behavior] | None = None,
        api_key: str | None = None,
        more_keys: tuple[str, ...] = (),
    ) -> None:
        self.default = default or Behavior()
        self.models: dict[str, Behavior] = dict(models or {})
        self.api_key = api_key  # when set, requests without it get the provider's real 401
        self.keys = {k for k in (api_key, *more_keys) if k}  # every key the fake accepts
        # The provider's own rate limiting: requests per minute per key (a token bucket holding
        # one minute's worth, refilled continuously); beyond it, real 429s with Retry-After.
        self.rpm_per_key: dict[str, int] = {}
        self._key_buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, updated)
        self.rate_limited = 0  # 429s answered for a key over its limit
        self._queue: deque[Behavior] = deque()
        self._lock = threading.Lock()
        self.requests: list[Recorded] = []
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # --- scripting (thread-safe: tests script from their own loop) ---

    def behave(self, behavior: Behavior, model: str | None = None, times: int | None = None) -> None:
        """`times=n`: the next n requests (any model); else for `model`, or the default."""
        with self._lock:
            if times is not None:
                self._queue.extend([behavior] * times)
            elif model is not None:
                self.models[model] = behavior
            else:
                self.default = behavior

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self.models.clear()
            self.default = Behavior()
            self.requests.clear()

    def _pick(self, model: str) -> Behavior:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            return self.models.get(model, self.default)

    def last(self) -> Recorded:
        return self.requests[-1]

    def limit_key(self, key: str, rpm: int | None) -> None:
        """Enforce `rpm` requests per minute for `key` (None: no limit)."""
        with self._lock:
            self._key_buckets.pop(key, None)
            if rpm:
                self.rpm_per_key[key] = rpm
            else:
                self.rpm_per_key.pop(key, None)

    def credential(self, request: Request) -> str:
        """The API key a request was sent with, whichever header the provider uses."""
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return request.headers.get("x-api-key") or request.headers.get("x-goog-api-key") or ""

    def _take_request(self, key: str, rpm: int) -> tuple[int, float]:
        """(requests left after this one, 0) or (0, seconds until one is free) when over."""
        now = time.monotonic()
        rate = rpm / 60.0
        with self._lock:
            tokens, updated = self._key_buckets.get(key, (float(rpm), now))
            tokens = min(float(rpm), tokens + (now - updated) * rate)
            if tokens < 1.0:
                self._key_buckets[key] = (tokens, now)
                return 0, (1.0 - tokens) / rate
            self._key_buckets[key] = (tokens - 1.0, now)
            return int(tokens - 1.0), 0.0

    def rate_limit_headers(self, limit: int, remaining: int, reset_s: float) -> dict[str, str]:
        """OpenAI's family (x-ratelimit-*, resets as Go durations); others override."""
        return {
            "x-ratelimit-limit-requests": str(limit),
            "x-ratelimit-remaining-requests": str(remaining),
            "x-ratelimit-reset-requests": f"{reset_s:.3f}s".replace(".000s", "s"),
        }

    # --- what a provider subclass supplies ---

    def routes(self) -> list[Route]:
        raise NotImplementedError

    def authorized(self, request: Request) -> bool:
        raise NotImplementedError

    def error_response(self, status: int, behavior: Behavior) -> Response:
        raise NotImplementedError

    def complete_body(self, body: Any, model: str, behavior: Behavior, usage: dict[str, int]) -> Any:
        raise NotImplementedError

    def stream_frames(self, body: Any, model: str, behavior: Behavior, usage: dict[str, int]) -> list[Frame]:
        raise NotImplementedError

    def stream_error_frame(self, behavior: Behavior) -> bytes:
        raise NotImplementedError

    # --- the shared request cycle ---

    def usage_for(self, body: Any, behavior: Behavior) -> dict[str, int]:
        if behavior.prompt_tokens is not None:
            prompt = behavior.prompt_tokens
        else:
            prompt = max(1, len(orjson.dumps(body)) // 4)
        if behavior.completion_tokens is not None:
            completion = behavior.completion_tokens
        elif behavior.tool_call is not None:
            completion = 12
        else:
            completion = len(pieces(behavior.text))
        return {
            "prompt": prompt,
            "completion": completion,
            "cached": behavior.cached_tokens,
            "write": behavior.cache_write_tokens,
            "write_1h": behavior.cache_write_1h_tokens,
            "reasoning": behavior.reasoning_tokens,
        }

    async def handle(
        self,
        request: Request,
        model: str,
        stream: bool,
        answer: Callable[[Any, str, Behavior, dict[str, int]], Any] | None = None,
        usage_of: Callable[[Any, Behavior], dict[str, int]] | None = None,
        frames_of: Callable[[Any, str, Behavior, dict[str, int]], list[Frame]] | None = None,
        error_frame: Callable[[Behavior], bytes] | None = None,
    ) -> Response:
        """The request cycle; `answer`, `usage_of`, `frames_of` and `error_frame` replace
        complete_body, usage_for, stream_frames and stream_error_frame for endpoints other than
        the chat one (embeddings, token counts, OpenAI's Responses API)."""
        raw = await request.body()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        record = Recorded(
            path=request.url.path,
            query=dict(request.query_params),
            headers=dict(request.headers),
            body=body,
            model=model,
            stream=stream,
        )
        self.requests.append(record)
        behavior = self._pick(model)
        if not self.authorized(request):
            record.outcome = "error"
            return self.error_response(401, Behavior(error_message="invalid api key"))
        if body is None:
            record.outcome = "error"
            return self.error_response(400, Behavior(error_message="body is not valid JSON"))
        limit_headers: dict[str, str] = {}
        rpm = self.rpm_per_key.get(self.credential(request))
        if rpm:
            remaining, wait_s = self._take_request(self.credential(request), rpm)
            # Time until the bucket is full again, as providers report their reset.
            reset_s = wait_s if wait_s else (rpm - remaining) * 60.0 / rpm
            limit_headers = self.rate_limit_headers(rpm, remaining, reset_s)
            if wait_s:
                record.outcome = "rate_limited"
                self.rate_limited += 1
                response = self.error_response(
                    429, Behavior(error_message=f"Rate limit reached for requests: limit {rpm} per minute")
                )
                response.headers.update(limit_headers)
                response.headers["retry-after"] = str(max(1, int(wait_s + 0.999)))
                return response
        if behavior.delay_s and await self._gone_while_waiting(request, behavior.delay_s):
            record.outcome = "client_disconnected"  # the caller closed the connection: a cancel
            return Response(status_code=499)
        if behavior.status >= 400:
            record.outcome = "error"
            response = self.error_response(behavior.status, behavior)
            if behavior.retry_after is not None:
                response.headers["retry-after"] = behavior.retry_after
            return response
        usage = (usage_of or self.usage_for)(body, behavior)
        record.usage = usage
        headers = {**limit_headers, **behavior.headers}
        if not stream:
            record.outcome = "ok"
            if behavior.invalid_json_body:
                return Response(b"<html>not json</html>", headers=headers, media_type="application/json")
            return Response(
                orjson.dumps((answer or self.complete_body)(body, model, behavior, usage)),
                headers=headers,
                media_type="application/json",
            )
        frames = (frames_of or self.stream_frames)(body, model, behavior, usage)
        return StreamingResponse(
            self._play(frames, behavior, record, error_frame or self.stream_error_frame),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", **headers},
        )

    @staticmethod
    async def _gone_while_waiting(request: Request, delay_s: float) -> bool:
        """Wait `delay_s`, noticing a caller that hangs up meanwhile (True: it did)."""
        deadline = time.monotonic() + delay_s
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, 0.05))
            if await request.is_disconnected():
                return True
        return False

    async def _play(
        self,
        frames: list[Frame],
        behavior: Behavior,
        record: Recorded,
        error_frame: Callable[[Behavior], bytes],
    ):
        sent = 0
        try:
            for frame in frames:
                if frame.content:
                    if behavior.disconnect_after is not None and sent >= behavior.disconnect_after:
                        record.outcome = "cut"
                        raise _Cut()
                    if behavior.stall_after is not None and sent >= behavior.stall_after:
                        record.outcome = "stalled"
                        await asyncio.sleep(STALL_S)
                        return
                    if behavior.malformed_after is not None and sent >= behavior.malformed_after:
                        record.outcome = "malformed"
                        yield b'data: {"choices": [{"delta": {"content": "unterminated\n\n'
                        return
                    if behavior.error_event_after is not None and sent >= behavior.error_event_after:
                        record.outcome = "error"
                        yield error_frame(behavior)
                        return
                    if sent and behavior.chunk_delay_s:
                        await asyncio.sleep(behavior.chunk_delay_s)
                    sent += 1
                yield frame.data
            record.outcome = "ok"
        except (asyncio.CancelledError, GeneratorExit):
            if record.outcome in ("pending", "stalled"):
                record.outcome = "client_disconnected"
            raise

    # --- control API and server ---

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                *self.routes(),
                Route("/_fake/behavior", self._set_behavior, methods=["POST"]),
                Route("/_fake/reset", self._reset, methods=["POST"]),
                Route("/_fake/requests", self._list_requests, methods=["GET"]),
            ]
        )

    async def _set_behavior(self, request: Request) -> Response:
        data = orjson.loads(await request.body())
        model = data.pop("model", None)
        times = data.pop("times", None)
        try:
            behavior = Behavior.from_json(data)
        except (TypeError, ValueError) as exc:
            return Response(orjson.dumps({"error": str(exc)}), status_code=400, media_type="application/json")
        self.behave(behavior, model=model, times=times)
        return Response(b'{"ok": true}', media_type="application/json")

    async def _reset(self, request: Request) -> Response:
        self.reset()
        return Response(b'{"ok": true}', media_type="application/json")

    async def _list_requests(self, request: Request) -> Response:
        return Response(orjson.dumps([r.to_json() for r in self.requests]), media_type="application/json")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What a deployment's base_url should be (the provider's SDK convention)."""
        return self.url

    def start(self, port: int = 0, http: str = "h11") -> FakeUpstream:
        """Serve on 127.0.0.1:`port` (0: a free one) in a background thread. `http="httptools"`
        is faster under load (benchmarks); h11 is the pure-Python default."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app(),
            log_level="critical",
            access_log=False,
            lifespan="off",
            loop="asyncio",
            http=http,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=f"fake-{self.provider}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"fake {self.provider} upstream did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def json_response(data: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, headers=headers, media_type="application/json")
