"""Whether a request is still worth working on: its deadline, and whether its client left. Pure.

Under overload the cheapest request is the one not served: a request that waited in a queue
(the router's subscription, a worker's slots) past its deadline, or whose client went away
meanwhile, would cost an upstream call and a budget hold for an answer nobody reads. The router
checks before it authorizes and hands off; the worker before each upstream call
(docs/reliability.md, "Deadlines at every hop").

The ingress says a client left by publishing `llm.cancel.<request_id>` (client.GatewayClient
.cancel); routers and workers hear every cancel and keep the recent ones in a `GoneBook`.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

Skip = Literal["deadline", "client_gone"]
# How long past a request's deadline its worker may still wait for the request's record to be
# stored before answering (never for an upstream call, which the deadline ends): a call that
# ended just before the deadline is answered once its bill is stored, not refused for lack of
# time to store it (services/providers/main.py, `_store_wait_s`).
RECORD_GRACE_S = 0.5
# How long past the deadline the ingress waits for the answer: the record's grace and the final
# frame's way back on a loaded machine. Shorter, and a client was told "timeout" for a request
# whose answer came a moment later and was billed `ok` (a chaos run, 2026-12-08).
ANSWER_GRACE_S = RECORD_GRACE_S + 0.5


def expired(deadline_unix_ms: int, now_unix_ms: float) -> bool:
    """True when the request has a deadline and it has passed."""
    return bool(deadline_unix_ms) and now_unix_ms >= deadline_unix_ms


class GoneBook:
    """Request ids whose client went away, kept `ttl_s` (past it the deadline says the same)
    and at most `max_ids` (the oldest go first): bounded whatever the cancel rate."""

    def __init__(self, ttl_s: float, max_ids: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self.max_ids = max_ids
        self._ids: OrderedDict[str, float] = OrderedDict()  # id -> when heard, oldest first

    def add(self, request_id: str, now: float) -> None:
        self._ids[request_id] = now
        self._ids.move_to_end(request_id)
        self.expire(now)

    def expire(self, now: float) -> None:
        while self._ids:
            request_id, heard = next(iter(self._ids.items()))
            if now - heard < self.ttl_s and len(self._ids) <= self.max_ids:
                return
            del self._ids[request_id]

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)


def skip_reason(request_id: str, deadline_unix_ms: int, now_unix_ms: float, gone: GoneBook) -> Skip | None:
    """Why a request should get no more work here, or None."""
    if request_id in gone:
        return "client_gone"
    if expired(deadline_unix_ms, now_unix_ms):
        return "deadline"
    return None
