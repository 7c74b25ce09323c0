"""The in-flight journal of a worker inside an ingress process: no request without a record
when that process dies.

Why: with SWITCHYARD_WORKER_MODE=ingress the router that watches a worker's requests
(services/router/liveness.py) runs in the same process as the worker, so a SIGKILL or an OOM
kill takes the requests' only record with it. Each beat interval while it holds requests, the
worker writes to the KV bucket `switchyard_inflight`, under its instance's name, the record each
one would get if the process died then (an `error` with what the provider has billed so far,
as a router records a lost worker's request) and the finished records the events stream has not
stored yet; it deletes the key when it holds nothing. One write per interval, none per request.

Who records them: a process of the same instance at its start (a restarted `switchyard up`
child, a pod of a StatefulSet), and any other such worker that finds an entry not rewritten for
`stale_s` (a pod that will not come back under its name). The first to delete the entry at its
revision publishes it; every record goes out with the request id as its msg id, so one the
stream already stored (the request finished after the last write) is dropped there, and the
ledger drops any it has. What the journal cannot cover: requests taken after the last write
(at most one beat interval, 0.5 s by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable

from google.protobuf.message import DecodeError
from nats.js.client import JetStreamContext
from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

from switchyard import subjects
from switchyard.bus import NATS_ERRORS, EventPublisher
from switchyard.tenancy_store import open_bucket
from switchyard.v1 import events_pb2, liveness_pb2

log = logging.getLogger("switchyard.providers.inflight")


def instance_name(configured: str, port: int) -> str:
    """This process's name in the journal: SWITCHYARD_INSTANCE, else host and API port (what a
    restarted `switchyard up` child keeps). A KV key: no dots, spaces or wildcards."""
    name = configured or f"{socket.gethostname()}-{port}"
    return "".join(c if c.isalnum() or c in "-_=" else "_" for c in name)


def adoptable(
    journal: liveness_pb2.InflightJournal, own: str, now_ms: float, stale_s: float, fresh_s: float
) -> bool:
    """Whether this process records `journal`'s requests: it is its own instance's, left by a
    predecessor (read at start only) and not rewritten for `fresh_s` (a live process of the same
    name, misconfigured, rewrites it every beat interval), or another's not rewritten for
    `stale_s`."""
    age_ms = now_ms - journal.updated_unix_ms
    return age_ms >= (fresh_s if journal.instance == own else stale_s) * 1000


def record_ids(journal: liveness_pb2.InflightJournal) -> list[tuple[str, bytes]]:
    """(request id, record) of each record in the journal; an undecodable one is skipped."""
    out = []
    for record in journal.records:
        try:
            out.append((events_pb2.Completion.FromString(record).request_id, record))
        except DecodeError:
            log.error("an undecodable record in the in-flight journal of %s skipped", journal.instance)
    return out


class InflightJournal:
    """The worker's side: `write` each interval, `adopt` at start and every `stale_s / 3`."""

    def __init__(
        self, kv: KeyValue, instance: str, events: EventPublisher, stale_s: float, beat_s: float
    ) -> None:
        self.kv = kv
        self.instance = instance
        self.events = events
        self.stale_s = stale_s
        self.fresh_s = 3 * beat_s  # younger than this, a journal of this name has a live writer
        self._written = False  # the key holds something of ours
        self._scans: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        js: JetStreamContext,
        replicas: int,
        instance: str,
        events: EventPublisher,
        stale_s: float,
        beat_s: float,
    ) -> InflightJournal:
        kv = await open_bucket(js, subjects.INFLIGHT_BUCKET, replicas)
        return cls(kv, instance, events, stale_s, beat_s)

    async def write(self, records: list[bytes], now_ms: float) -> None:
        """This instance's records now (none: the key is deleted, once)."""
        try:
            if records:
                journal = liveness_pb2.InflightJournal(
                    instance=self.instance, updated_unix_ms=now_ms, records=records
                )
                await self.kv.put(self.instance, journal.SerializeToString())
                self._written = True
            elif self._written:
                await self.kv.delete(self.instance)
                self._written = False
        except NATS_ERRORS as exc:  # the next interval writes it again
            log.warning("in-flight journal not written: %s", exc)

    async def adopt(self, now_ms: float, at_start: bool = False) -> int:
        """Publish the records of every journal this process should record (its own instance's
        only `at_start`), deleting each first so that one process does; how many records."""
        published = 0
        try:
            keys = await self.kv.keys()
        except NoKeysError:
            return 0
        except NATS_ERRORS as exc:
            log.warning("in-flight journals not read: %s", exc)
            return 0
        for key in keys:
            if key == self.instance and not at_start:
                continue  # ours, being written
            try:
                published += await self._adopt_one(key, now_ms)
            except NATS_ERRORS as exc:  # the next scan tries again
                log.warning("in-flight journal %s not read: %s", key, exc)
        return published

    async def _adopt_one(self, key: str, now_ms: float) -> int:
        try:
            entry = await self.kv.get(key)
        except (KeyNotFoundError, KeyDeletedError):
            return 0  # claimed since the listing
        if not entry.value:
            return 0
        try:
            journal = liveness_pb2.InflightJournal.FromString(entry.value)
        except DecodeError:
            log.error("in-flight journal %s is undecodable: left as it is", key)
            return 0
        if not adoptable(journal, self.instance, now_ms, self.stale_s, self.fresh_s):
            if key == self.instance:
                log.error("another live process journals as %s: give each its own SWITCHYARD_INSTANCE", key)
            return 0
        try:
            await self.kv.delete(key, last=entry.revision)  # claimed: nobody else publishes it
        except KeyWrongLastSequenceError:
            return 0  # rewritten (alive after all) or claimed by another process
        records = record_ids(journal)
        for request_id, record in records:
            self.events.publish(subjects.COMPLETION, record, msg_id=request_id)
        log.warning(
            "recorded %d request(s) in flight when %s stopped without finishing them",
            len(records),
            journal.instance,
        )
        return len(records)

    def start_scans(self, now_ms: Callable[[], float]) -> None:
        """Look for other instances' stale journals every `stale_s / 3` (one KV listing)."""

        async def scan() -> None:
            while True:
                await asyncio.sleep(max(self.stale_s / 3, 0.5))
                with contextlib.suppress(*NATS_ERRORS):
                    await self.adopt(now_ms())

        self._scans = asyncio.create_task(scan(), name="inflight-scans")

    async def stop(self) -> None:
        if self._scans is not None:
            self._scans.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scans
            self._scans = None
