"""Leadership of the budget authority: a KV key in a bucket whose entries expire after the
lease TTL. Whoever creates the key leads; the leader renews it by compare-and-set on its
revision; a crashed leader's key expires and a standby creates it.

Fencing without synchronised clocks: the leader trusts its lease only until
`sent + ttl - margin` on its own monotonic clock, where `sent` is taken before the write that
(re)started the server-side TTL. The server expires the key no earlier than `ttl` after it
received that write, so the old leader stops answering before anyone else can lead.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import nats
from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from switchyard.bus import NATS_ERRORS

LEASE_KEY = "leader"


class Lease:
    def __init__(self, kv: KeyValue, holder: str, ttl_s: float) -> None:
        self.kv = kv
        self.holder = holder
        self.ttl_s = ttl_s
        self.margin_s = max(0.25 * ttl_s, 0.2)
        self.revision = 0
        self.valid_until = 0.0

    @property
    def held(self) -> bool:
        return self.revision > 0

    def valid(self) -> bool:
        return self.held and time.monotonic() < self.valid_until

    async def try_acquire(self) -> bool:
        sent = time.monotonic()
        try:
            self.revision = await self.kv.create(LEASE_KEY, self.holder.encode())
        except KeyWrongLastSequenceError:
            return False
        self.valid_until = sent + self.ttl_s - self.margin_s
        return True

    async def renew(self) -> bool:
        """Extend the lease; False when it is lost (taken over, or unrenewable in time)."""
        while self.valid():
            sent = time.monotonic()
            try:
                self.revision = await self.kv.update(LEASE_KEY, self.holder.encode(), last=self.revision)
            except KeyWrongLastSequenceError:
                break
            except (nats.errors.Error, TimeoutError):
                await asyncio.sleep(0.05)  # NATS hiccup: retry while the lease is still ours
                continue
            self.valid_until = sent + self.ttl_s - self.margin_s
            return True
        self.revision = 0
        return False

    async def release(self) -> None:
        """Give the lease up at once (a clean stop): the standby need not wait for the TTL."""
        if self.held:
            revision, self.revision = self.revision, 0
            # Lost already, or NATS is gone: the TTL frees it anyway.
            with contextlib.suppress(*NATS_ERRORS):
                await self.kv.delete(LEASE_KEY, last=revision)

    def drop(self) -> None:
        self.revision = 0

    async def current_holder(self) -> str:
        try:
            entry = await self.kv.get(LEASE_KEY)
        except (KeyNotFoundError, KeyDeletedError):
            return ""
        return (entry.value or b"").decode()
