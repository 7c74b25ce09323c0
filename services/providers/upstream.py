"""The HTTP side shared by the real adapters: one pooled aiohttp session per deployment, the four
timeouts (connect, first byte, between chunks, total), error mapping and SSE reading.

aiohttp rather than httpx: against the benchmark's upstream it costs ~0.22 ms of CPU per call
where httpx costs ~0.9, and its pool does not scan every idle connection on each request
(docs/performance.md).

An adapter built on `HttpAdapter` supplies only pure translation: the URL, headers and JSON body
for a request, `parse_response` for a complete answer, and a `StreamTranslator` for SSE events.
"""

from __future__ import annotations

import asyncio
import functools
import time
import urllib.request
from abc import abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import aiohttp
import orjson
from pydantic import Field
from yarl import URL

from switchyard.catalog import Deployment, Timeouts
from switchyard.errors import ErrorCode, GatewayError
from switchyard.settings import Settings
from switchyard.v1 import invoke_pb2

from .adapters.base import AdapterOptions, Completed, Progress, ProviderAdapter, ReadPace
from .http_errors import error_from_exception, error_from_response
from .sse import SSEEvent, SSEReader

MAX_ERROR_BODY = 64 * 1024


def pooled_client(deployment: Deployment, max_connections: int) -> aiohttp.ClientSession:
    """The deployment's one session, reused by every request (keep-alive, connection pool).

    Made inside the running loop (aiohttp binds a session to it). aiohttp enforces the connect
    timeout (a new connection, or a wait for a free one); first byte, between-chunk and total
    timeouts are enforced around each read by `HttpAdapter`. The proxy is resolved once per host
    (`proxy_for`), not by aiohttp's `trust_env`, which re-reads the environment and ~/.netrc in a
    thread on every request (8 % of the worker's CPU in the benchmark). No cookie jar: a provider's
    cookies (a CDN's bot-management cookie) would otherwise be kept and sent back with every
    tenant's later requests, and filtering the jar costs each request.
    """
    t = deployment.timeouts
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=max_connections,
            limit_per_host=0,
            keepalive_timeout=30.0,
        ),
        timeout=aiohttp.ClientTimeout(total=None, connect=t.connect_s, sock_connect=t.connect_s),
        cookie_jar=aiohttp.DummyCookieJar(),
    )


@functools.lru_cache(maxsize=256)
def proxy_for(scheme: str, host: str) -> str | None:
    """The HTTP(S)_PROXY from the environment for this host, unless NO_PROXY exempts it."""
    if not host or urllib.request.proxy_bypass(host):
        return None
    return urllib.request.getproxies().get(scheme)


@dataclass(frozen=True)
class Deadline:
    """When each timer of one upstream call fires (monotonic seconds). Pure."""

    started: float
    total_at: float
    first_byte_s: float
    between_chunks_s: float

    @classmethod
    def start(
        cls, timeouts: Timeouts, request_deadline_unix_ms: int = 0, now: float | None = None
    ) -> Deadline:
        started = time.monotonic() if now is None else now
        total = timeouts.total_s
        if request_deadline_unix_ms:
            # The request's own deadline (set by the ingress) caps the deployment's total.
            total = min(total, max(request_deadline_unix_ms / 1000.0 - time.time(), 0.0))
        return cls(started, started + total, timeouts.first_byte_s, timeouts.between_chunks_s)

    def budget(self, timer_s: float, now: float) -> tuple[float, bool]:
        """Seconds to wait for the next read, and whether the total deadline is the binding one."""
        left = self.total_at - now
        return (left, True) if left <= timer_s else (timer_s, False)


class StreamTranslator(Protocol):
    """Pure: one provider's SSE events -> neutral chunks, then one Completed."""

    done: bool

    def feed(self, event: SSEEvent) -> list[invoke_pb2.Chunk | Progress]: ...

    def result(self) -> Completed: ...


def json_event(event: SSEEvent, provider: str) -> dict[str, Any]:
    """The JSON payload of an event; a malformed one fails the call (never silently skipped)."""
    try:
        payload = orjson.loads(event.data)
    except orjson.JSONDecodeError:
        raise GatewayError(
            ErrorCode.UPSTREAM_ERROR,
            f"{provider} sent a malformed stream event: {event.data[:80]!r}",
            provider=provider,
        ) from None
    if not isinstance(payload, dict):
        raise GatewayError(
            ErrorCode.UPSTREAM_ERROR, f"{provider} sent a non-object stream event", provider=provider
        )
    return payload


def rate_limit_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items() if "ratelimit" in k.lower()}


class HttpOptions(AdapterOptions):
    """Options every HTTP adapter reads."""

    max_connections: int = Field(default=512, ge=1)  # the deployment's connection pool
    # Whether the model takes a reasoning control; unset: known from its family name
    # (switchyard/reasoning.py). A model that does not is sent none, whatever the caller asked.
    reasoning: bool | None = None


class HttpAdapter(ProviderAdapter):
    """complete/stream over HTTP with the deployment's pooled client and timeouts."""

    options_model: ClassVar[type[AdapterOptions]] = HttpOptions
    options: HttpOptions

    def __init__(self, deployment: Deployment, settings: Settings) -> None:
        super().__init__(deployment, settings)
        self.provider = deployment.provider
        self._client: aiohttp.ClientSession | None = None
        # Built once, not per request: the parsed URL and its proxy, the merged headers.
        self._targets: dict[str, tuple[URL, str | None]] = {}
        self._headers_of: tuple[dict[str, str], dict[str, str], dict[str, str]] | None = None

    @property
    def client(self) -> aiohttp.ClientSession:
        if self._client is None:
            self._client = pooled_client(self.deployment, self.options.max_connections)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()

    # --- what a concrete adapter supplies (pure) ---

    @abstractmethod
    def url(self, request: invoke_pb2.InvokeRequest, stream: bool) -> str: ...

    @abstractmethod
    def headers(self) -> dict[str, str]: ...

    @abstractmethod
    def body(self, request: invoke_pb2.InvokeRequest, stream: bool) -> dict[str, Any]: ...

    @abstractmethod
    def parse_response(self, request: invoke_pb2.InvokeRequest, payload: dict[str, Any]) -> Completed: ...

    @abstractmethod
    def stream_translator(self, request: invoke_pb2.InvokeRequest) -> StreamTranslator: ...

    # --- I/O ---

    def _target(self, url: str) -> tuple[URL, str | None]:
        """The URL parsed once, and the proxy for its host (an adapter has a few URLs; the
        bound only guards one that would build a new URL per request)."""
        target = self._targets.get(url)
        if target is None:
            if len(self._targets) >= 64:
                self._targets.clear()
            parsed = URL(url)
            target = self._targets[url] = (parsed, proxy_for(parsed.scheme, parsed.host or ""))
        return target

    def _request_headers(self, stream: bool) -> dict[str, str]:
        """The adapter's headers with the content type (and a stream's accept), merged once for
        as long as the adapter returns the same headers."""
        own = self.headers()
        cached = self._headers_of
        if cached is None or cached[0] is not own:
            plain = {"content-type": "application/json", **own}
            cached = self._headers_of = (own, plain, {**plain, "accept": "text/event-stream"})
        return cached[2] if stream else cached[1]

    async def _open(
        self, request: invoke_pb2.InvokeRequest, stream: bool, deadline: Deadline
    ) -> aiohttp.ClientResponse:
        body = orjson.dumps(self.body(request, stream))
        # Non-streaming answers send their headers only when the whole completion is ready, so
        # only the total deadline applies to them; a stream's headers must come within first_byte.
        timer = deadline.first_byte_s if stream else deadline.total_at - deadline.started
        wait, total_binds = deadline.budget(timer, time.monotonic())
        url, proxy = self._target(self.url(request, stream))
        try:
            async with asyncio.timeout(wait):
                response = await self.client.post(
                    url,
                    data=body,
                    headers=self._request_headers(stream),
                    allow_redirects=False,
                    proxy=proxy,
                )
        # aiohttp's own timeouts are also TimeoutErrors: its connect timeout is caught here first.
        except aiohttp.ClientError as exc:
            raise error_from_exception(self.provider, exc, "connect") from None
        except TimeoutError:
            raise self._timeout("total" if total_binds or not stream else "first byte", wait) from None
        if response.status >= 400:
            raise await self._error(response, deadline)
        return response

    async def _error(self, response: aiohttp.ClientResponse, deadline: Deadline) -> GatewayError:
        body = b""
        try:
            wait, _ = deadline.budget(deadline.between_chunks_s, time.monotonic())
            async with asyncio.timeout(max(wait, 0.001)):
                async for part in response.content.iter_any():
                    body += part
                    if len(body) > MAX_ERROR_BODY:
                        break
        except (TimeoutError, aiohttp.ClientError):
            pass  # the status alone still classifies the error
        finally:
            finish(response)
        return error_from_response(self.provider, response.status, response.headers, body)

    def _timeout(self, which: str, seconds: float) -> GatewayError:
        return GatewayError(
            ErrorCode.TIMEOUT,
            f"{self.provider} timed out: no {'data' if which != 'total' else 'completion'} within "
            f"{seconds:.3g}s ({which} timeout of deployment {self.deployment.id})",
            provider=self.provider,
        )

    async def complete(self, request: invoke_pb2.InvokeRequest) -> Completed:
        deadline = Deadline.start(self.deployment.timeouts, request.deadline_unix_ms)
        response = await self._open(request, stream=False, deadline=deadline)
        try:
            async with asyncio.timeout(max(deadline.total_at - time.monotonic(), 0.001)):
                raw = await response.read()
        except aiohttp.ClientError as exc:
            raise error_from_exception(self.provider, exc, "reading the response") from None
        except TimeoutError:
            raise self._timeout("total", deadline.total_at - deadline.started) from None
        finally:
            finish(response)
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise GatewayError(
                ErrorCode.UPSTREAM_ERROR,
                f"{self.provider} answered with invalid JSON",
                provider=self.provider,
            ) from None
        if not isinstance(payload, dict):
            raise GatewayError(
                ErrorCode.UPSTREAM_ERROR,
                f"{self.provider} answered with a non-object",
                provider=self.provider,
            )
        completed = self.parse_response(request, payload)
        completed.http_status = response.status
        completed.rate_limits = rate_limit_headers(response.headers)
        return completed

    async def stream(
        self, request: invoke_pb2.InvokeRequest, pace: ReadPace | None = None
    ) -> AsyncGenerator[invoke_pb2.Chunk | Progress | Completed, None]:
        deadline = Deadline.start(self.deployment.timeouts, request.deadline_unix_ms)
        translator = self.stream_translator(request)
        response = await self._open(request, stream=True, deadline=deadline)
        try:
            async for events in self._reads(response, deadline, pace):
                for event in events:
                    for item in translator.feed(event):
                        yield item
                    if translator.done:
                        break
                if translator.done:
                    break
            # A stream that ends before its terminal event was cut: result() raises.
            completed = translator.result()
        finally:
            # Also on cancellation: closing mid-body drops the connection, which is how an
            # upstream learns the client went away and stops generating.
            finish(response)
        completed.http_status = response.status
        completed.rate_limits = rate_limit_headers(response.headers)
        yield completed

    async def _reads(
        self, response: aiohttp.ClientResponse, deadline: Deadline, pace: ReadPace | None
    ) -> AsyncIterator[list[SSEEvent]]:
        """The SSE events of each read of the body, as it arrives; the first-byte and
        between-chunks timers run per read.

        With a `pace`, the body is left unread for as long as its consumer holds chunks back
        anyway (`hold_reading`), so the tokens of a coalescing window arrive in one read and are
        parsed in one pass instead of waking this task per token. The between-chunks timer
        starts after the hold, so a stalled upstream is found at most one window later; the
        hold never outlasts the total deadline."""
        reader = SSEReader()
        content = response.content
        timer, which = deadline.first_byte_s, "first byte"
        while True:
            if pace is not None and (hold := min(pace.hold_s(), deadline.total_at - time.monotonic())) > 0:
                await hold_reading(response, hold)
            wait, total_binds = deadline.budget(timer, time.monotonic())
            try:
                async with asyncio.timeout(max(wait, 0.0)):
                    data = await content.readany()
            except aiohttp.ClientError as exc:
                raise error_from_exception(self.provider, exc, "mid-stream") from None
            except TimeoutError:
                raise self._timeout("total" if total_binds else which, wait) from None
            if not data:  # end of body
                yield reader.flush()
                return
            timer, which = deadline.between_chunks_s, "between chunks"
            events = reader.feed(data)
            if events:
                yield events


async def hold_reading(response: aiohttp.ClientResponse, seconds: float) -> None:
    """Leave the response's body unread for `seconds`, or until it ends: what arrives meanwhile
    gathers in aiohttp's buffer and is taken by the next read at once. A cancel (the client
    left) lands at once; a broken connection ends the hold and the next read raises its error.

    The socket is not paused: the body's end must be seen when it comes, or the stream's last
    batch and its final frame would wait out the hold."""
    content = response.content
    if content.is_eof() or content.exception() is not None:
        return  # nothing more will come: the next read returns the end, or raises the error
    try:
        async with asyncio.timeout(seconds):
            await content.wait_eof()
    except (TimeoutError, aiohttp.ClientError):
        pass


def finish(response: aiohttp.ClientResponse) -> None:
    """Give a fully read connection back to the pool; drop one closed mid-body."""
    if response.content.at_eof():
        response.release()
    else:
        response.close()
