"""The NATS connection every service uses, the JetStream stream it needs, and publish helpers.

Services talk to nats-py directly: FastStream costs ~250 µs per hop on this machine
(STACK-NOTES.md), and the request path crosses three hops.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NoStreamResponseError, NotFoundError

from switchyard import subjects
from switchyard.busauth import BusCredentials
from switchyard.logs import register_secret

log = logging.getLogger(__name__)

# The duplicate window must outlast the longest redelivery of a completion event, so a
# worker that republishes after a NATS failover is de-duplicated by msg id (request_id).
DUPLICATE_WINDOW_S = 30 * 60
EVENTS_MAX_AGE_S = 7 * 24 * 3600
# What a NATS call raises when the server is away, slow or says no: nats-py's errors (timeouts,
# a closed or draining connection, no responders, JetStream API errors) and the socket's OSError
# (TimeoutError is one). Handlers around bus I/O catch these rather than Exception, so a bug
# in our own code is not mistaken for a NATS outage.
NATS_ERRORS: tuple[type[Exception], ...] = (nats.errors.Error, OSError)


async def connect(
    url: str, name: str, credentials: BusCredentials | None = None, tls_ca_file: Path | None = None
) -> NATS:
    """A connection as `credentials`' user (docs/reliability.md "The bus boundary"): its
    password is sent in the CONNECT, never put in the URL, and its replies arrive under the
    user's own inbox prefix, the only one its permissions let it subscribe to."""

    nc = NATS()

    async def on_error(exc: Exception) -> None:
        # Without error_cb nats-py prints a traceback on every reconnect attempt.
        log.warning("nats: %s", exc)

    async def on_disconnected() -> None:
        # nats-py calls this on our own close() too (every CLI call, every stop): only a lost
        # connection is news. A close sets the status to CLOSED before the callback runs.
        if not nc.is_closed:
            log.warning("nats: disconnected; reconnecting")

    async def on_reconnected() -> None:
        log.info("nats: reconnected")

    auth: dict[str, Any] = {}
    if credentials is not None:
        register_secret(credentials.password)
        auth = {
            "user": credentials.user,
            "password": credentials.password,
            "inbox_prefix": credentials.inbox_prefix,
        }
    if tls_ca_file is not None:
        auth["tls"] = ssl.create_default_context(cafile=str(tls_ca_file))
    await nc.connect(
        servers=url.split(","),
        **auth,
        name=name,
        error_cb=on_error,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,  # type: ignore[arg-type]  # typed int; nats-py sleeps for a float
        pending_size=64 * 1024 * 1024,
    )
    return nc


def events_stream_config(replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        name=subjects.EVENTS_STREAM,
        subjects=subjects.EVENTS_SUBJECTS,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=DUPLICATE_WINDOW_S,
        max_age=EVENTS_MAX_AGE_S,
    )


async def ensure_events_stream(js: JetStreamContext, replicas: int = 1, attempts: int = 40) -> None:
    """Create (or update) the EVENTS stream."""
    await ensure_stream(js, events_stream_config(replicas), update=True, attempts=attempts)


async def ensure_stream(js: JetStreamContext, config: StreamConfig, update: bool, attempts: int = 40) -> None:
    """Create `config`'s stream if it is missing (and bring it to `config` when `update`);
    retried 0.25 s apart while a cluster elects its meta leader or is busy creating streams
    (a second budget process starting beside the first once timed out here and exited), and
    when another starter created it first."""
    name = config.name
    assert name, "a stream config names its stream"
    for attempt in range(attempts):
        try:
            try:
                await js.stream_info(name)
                if update:
                    await js.update_stream(config)
            except nats.js.errors.NotFoundError:
                await js.add_stream(config)
            return
        except (NoStreamResponseError, nats.errors.TimeoutError, BadRequestError) as exc:
            if attempt == attempts - 1:
                raise
            log.info("waiting for JetStream to set up stream %s (%s)", name, exc)
            await asyncio.sleep(0.25)


async def stream_messages(
    js: JetStreamContext, stream: str, subject: str, first_seq: int = 1, before_seq: int = 0
) -> AsyncIterator[RawStreamMsg]:
    """The messages of `stream` on `subject` from `first_seq` (and below `before_seq`, when it
    is given), read by sequence: one JetStream request each, for recovery and diagnosis, never
    for the request path."""
    seq = first_seq
    while not before_seq or seq < before_seq:
        try:
            raw = await js.get_msg(stream, seq=seq, subject=subject, next=True)
        except NotFoundError:
            return
        if raw.seq is None or (before_seq and raw.seq >= before_seq):
            return
        yield raw
        seq = raw.seq + 1


class EventPublisher:
    """Publishes JetStream events: queued, retried, never dropped by a publisher that lives.

    A publish can fail for seconds while a stream leader moves (STACK-NOTES.md); the queue is
    drained by one task that retries with backoff, and `drain()` waits for it on shutdown.
    `publish_durable` is the other way in: it waits for JetStream's acknowledgement (bounded),
    for a record that must be stored before the client is answered (a completion whose answer
    is about to be sent, docs/reliability.md).
    `stalled` says that events are not getting through, so new work can be refused instead of
    served without a durable record.
    """

    def __init__(self, js: JetStreamContext, max_backoff_s: float = 2.0) -> None:
        self._js = js
        self._queue: asyncio.Queue[tuple[str, bytes, dict[str, str]]] = asyncio.Queue()
        self._max_backoff_s = max_backoff_s
        self._task: asyncio.Task[None] | None = None
        self._failing_since: float | None = None  # monotonic time of the first failure in a row
        # Queued events are stored in order: the n-th `publish` is stored once `stored_through`
        # reaches n (a worker keeps a copy of each record until then: docs/reliability.md).
        self._queued = 0
        self._stored_through = 0

    @property
    def backlog(self) -> int:
        """Events queued and not yet stored."""
        return self._queue.qsize()

    @property
    def stored_through(self) -> int:
        """How many of the events queued with `publish` are stored (they are stored in order)."""
        return self._stored_through

    def stalled(self) -> bool:
        """True while the last publish failed and events wait to be stored."""
        return self._failing_since is not None

    def _failed(self) -> None:
        if self._failing_since is None:
            self._failing_since = time.monotonic()

    def _stored(self) -> None:
        self._failing_since = None

    async def publish_durable(
        self,
        subject: str,
        payload: bytes,
        msg_id: str,
        headers: dict[str, str] | None = None,
        timeout_s: float = 10.0,
    ) -> bool:
        """Publish and wait until JetStream has stored it, retrying for up to `timeout_s`.
        False when it could not be stored in time: the caller must not promise the client it is
        recorded, and queues (`publish`) the record it keeps instead."""
        hdrs = dict(headers or {})
        hdrs["Nats-Msg-Id"] = msg_id
        deadline = time.monotonic() + timeout_s
        backoff = 0.05
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                await self._js.publish(subject, payload, headers=hdrs, timeout=min(2.0, remaining))
                self._stored()
                return True
            except NATS_ERRORS as exc:
                self._failed()
                log.warning("durable event publish to %s failed, retrying: %s", subject, exc)
                await asyncio.sleep(min(backoff, max(deadline - time.monotonic(), 0)))
                backoff = min(backoff * 2, self._max_backoff_s)
        return False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-publisher")

    def publish(
        self, subject: str, payload: bytes, msg_id: str, headers: dict[str, str] | None = None
    ) -> int:
        """Queue an event; returns its position, stored once `stored_through` reaches it."""
        hdrs = dict(headers or {})
        hdrs["Nats-Msg-Id"] = msg_id
        self._queue.put_nowait((subject, payload, hdrs))
        self._queued += 1
        return self._queued

    async def _run(self) -> None:
        while True:
            subject, payload, headers = await self._queue.get()
            backoff = 0.05
            while True:
                try:
                    await self._js.publish(subject, payload, headers=headers, timeout=2.0)
                    self._stored()
                    self._stored_through += 1
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the publisher task must outlive anything, or events pile up
                    self._failed()
                    log.warning("event publish to %s failed, retrying: %s", subject, exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self._max_backoff_s)
            self._queue.task_done()

    async def drain(self, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(self._queue.join(), timeout_s)
        except TimeoutError:
            log.error("event publisher: %d events not published at shutdown", self._queue.qsize())
        if self._task:
            self._task.cancel()
