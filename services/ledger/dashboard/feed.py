"""The live feed's fan-out: one bounded queue per connected browser.

Fed from `ledger.feed` (requests just stored, published by whichever ledger stored them), so
every dashboard sees every request even with several ledger replicas; pushed to browsers as
Server-Sent Events. A browser that cannot keep up loses its oldest lines, never stalls others.
"""

from __future__ import annotations

import asyncio
from typing import Any

QUEUE_LIMIT = 1000


class FeedHub:
    def __init__(self, limit: int = QUEUE_LIMIT) -> None:
        self._limit = limit
        self._queues: set[asyncio.Queue[list[dict[str, Any]] | None]] = set()

    @property
    def clients(self) -> int:
        return len(self._queues)

    def subscribe(self) -> asyncio.Queue[list[dict[str, Any]] | None]:
        queue: asyncio.Queue[list[dict[str, Any]] | None] = asyncio.Queue(self._limit)
        self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[list[dict[str, Any]] | None]) -> None:
        self._queues.discard(queue)

    def publish(self, items: list[dict[str, Any]] | None) -> None:
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(items)

    def close(self) -> None:
        """Ends every open feed (None is the end-of-feed mark)."""
        self.publish(None)


def sse(event: str, data: bytes) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"
