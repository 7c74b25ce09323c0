"""Handing a Dispatch to the worker pool of its current chain position, with no per-request ack.

Used by the router (first hand-off, a lost worker's redispatch) and by workers (failover to
another pool, a drain's hand-over). The dispatch is published with a reply subject under this
process's inbox, and only a hand-off that did not land gets an answer there:

- no worker subscribes to the pool: nats-server itself answers at once with a 503 status
  (no-responders goes only to the publisher's reply subject), so a pool with no worker is still
  detected at once and the chain moves on;
- the worker that got it is full (its concurrency and bounded queue): it answers "busy", and the
  pool is asked again (another member may have room), up to BUSY_TRIES, then the next deployment.

A worker in the same process (SWITCHYARD_WORKER_MODE=ingress) is asked first, by a direct call
(`local_pools`): taken, the hand-off is no message at all; full or draining, the pool on the bus
is asked as above.

Silence is delivery: a hand-off costs one message, where a NATS request cost four (the request,
the ack, and each one's delivery: issue 15 counts messages per request). The answer is handled
when it comes (`_on_answer`), so the request's path never waits for it; when the chain runs
out, `on_exhausted` ends the request. An answer later than SETTLE_S is not expected (nats-server
answers in a round trip, a worker's "busy" is its first act on the message) and is ignored: the
router's liveness watch ends a request no worker's beat ever held (services/router/liveness.py).

One exception waits: a hedge racer handed to another pool (services/providers/hedge_remote.py)
goes by `hand_off`, a NATS request its worker acknowledges, because its racing worker needs the
outcome before it waits for frames; hedges are a share of one route's requests, not the plain
path.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from switchyard import subjects, telemetry
from switchyard.errors import ErrorCode
from switchyard.v1 import invoke_pb2

log = logging.getLogger(__name__)
# A full worker answers "busy" at once: ask the pool this many times (another member may have
# room) before moving to the next deployment.
BUSY_TRIES = 3
# How long a hand-off is remembered for an answer (no-responders or "busy"); also how long an
# acknowledged hand-off (`hand_off`) waits for its ack.
SETTLE_S = 2.0
ACK_TIMEOUT_S = SETTLE_S
NO_RESPONDERS = "503"

# (dispatch, target that did not take it): the chain ran out / the dispatch moved on.
Exhausted = Callable[[invoke_pb2.Dispatch, invoke_pb2.Target], Awaitable[None]]
Moved = Callable[[invoke_pb2.Dispatch, invoke_pb2.Target], None]
# A worker in this process (its `take`): True = it serves the dispatch, False = full or draining.
LocalTake = Callable[[invoke_pb2.Dispatch, dict[str, str] | None], bool]


@dataclass
class _Sent:
    dispatch: invoke_pb2.Dispatch
    busy: int  # "busy" answers from the current pool so far
    at: float  # monotonic


class HandOff:
    """One process's hand-offs that may still be answered, and the subscription for the answers."""

    def __init__(
        self, on_exhausted: Exhausted, on_moved: Moved | None = None, settle_s: float = SETTLE_S
    ) -> None:
        self._on_exhausted = on_exhausted
        self._on_moved = on_moved
        self._settle_s = settle_s
        self._sent: OrderedDict[str, _Sent] = OrderedDict()  # reply token -> hand-off, oldest first
        self._tokens = itertools.count()
        self._nc: NATS | None = None
        self._prefix = ""
        self._sub: Subscription | None = None
        # provider -> a worker of that pool in this process (SWITCHYARD_WORKER_MODE=ingress):
        # tried first, by a direct call; the pool on the bus when it is full or draining.
        self.local_pools: dict[str, LocalTake] = {}

    async def start(self, nc: NATS) -> None:
        self._nc = nc
        self._prefix = nc.new_inbox()  # under this user's inbox prefix (switchyard/busauth.py)
        self._sub = await nc.subscribe(f"{self._prefix}.*", cb=self._on_answer)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    def __len__(self) -> int:
        return len(self._sent)

    async def send(self, dispatch: invoke_pb2.Dispatch) -> bool:
        """Publish the dispatch to chain[position]'s pool. False when no position is left (the
        caller ends the request); True means sent: an answer may still move it on or end it."""
        return await self._send(dispatch, busy=0)

    async def _send(self, dispatch: invoke_pb2.Dispatch, busy: int) -> bool:
        if self._nc is None:
            raise RuntimeError("HandOff.send before start")
        now = time.monotonic()
        while self._sent:  # forget hand-offs past the time an answer could come
            token, oldest = next(iter(self._sent.items()))
            if now - oldest.at < self._settle_s:
                break
            del self._sent[token]
        if dispatch.position >= len(dispatch.chain):
            return False
        target = dispatch.chain[dispatch.position]
        take_here = self.local_pools.get(target.provider)
        if take_here is not None and take_here(dispatch, telemetry.inject_headers()):
            return True  # no message at all: the worker beside this router serves it
        token = str(next(self._tokens))
        self._sent[token] = _Sent(dispatch, busy, now)
        try:
            await self._nc.publish(
                subjects.provider_invoke(target.provider),
                dispatch.SerializeToString(),
                reply=f"{self._prefix}.{token}",
                headers=telemetry.inject_headers(),
            )
        except BaseException:
            self._sent.pop(token, None)
            raise
        return True

    async def _on_answer(self, msg: Msg) -> None:
        sent = self._sent.pop(msg.subject.rpartition(".")[2], None)
        if sent is None:
            log.warning("late hand-off answer on %s ignored", msg.subject)
            return
        dispatch = sent.dispatch
        target = dispatch.chain[dispatch.position]
        busy = 0
        if msg.headers and msg.headers.get("Status") == NO_RESPONDERS:
            _skip(dispatch, ErrorCode.NO_WORKER, _no_worker(target.provider))
        elif msg.data == subjects.HANDOFF_BUSY:
            busy = sent.busy + 1
            if busy >= BUSY_TRIES:
                # Every worker asked was full (the queue group picks one at random each time).
                _skip(dispatch, ErrorCode.OVERLOADED, _all_busy(target.provider))
                busy = 0
        else:  # an old worker's ack: delivered
            return
        try:
            if await self._send(dispatch, busy):
                if self._on_moved is not None:
                    self._on_moved(dispatch, target)
                return
        except Exception:  # a callback's boundary: the request must still be ended below
            log.exception("hand-off of %s to its next pool failed", dispatch.request.request_id)
        await self._on_exhausted(dispatch, target)


def acknowledged(dispatch: invoke_pb2.Dispatch) -> bool:
    """Whether the worker acknowledges this dispatch on receipt: only a hedge racer's (its
    racing worker waits for the outcome: `hand_off`), never a plain request's."""
    return bool(dispatch.hedge_for)


async def hand_off(nc: NATS, dispatch: invoke_pb2.Dispatch) -> bool:
    """A hand-off whose outcome the caller waits for: a NATS request the worker acknowledges
    (`acknowledged`). For a hedge racer sent to another pool (services/providers/hedge_remote.py),
    off the plain path; every other hand-off goes through `HandOff`. Skips pools with no worker
    or no room as `HandOff` does; False when none is left."""
    while dispatch.position < len(dispatch.chain):
        target = dispatch.chain[dispatch.position]
        try:
            for _ in range(BUSY_TRIES):
                ack = await nc.request(
                    subjects.provider_invoke(target.provider),
                    dispatch.SerializeToString(),
                    timeout=ACK_TIMEOUT_S,
                    headers=telemetry.inject_headers(),
                )
                if ack.data != subjects.HANDOFF_BUSY:
                    return True
            _skip(dispatch, ErrorCode.OVERLOADED, _all_busy(target.provider))
        except NoRespondersError:
            _skip(dispatch, ErrorCode.NO_WORKER, _no_worker(target.provider))
        except NatsTimeoutError:
            # Delivered but not acknowledged in time (a stalled worker): it may still run it.
            log.warning("hand-off of %s to %s not acknowledged", dispatch.request.request_id, target.provider)
            return True
    return False


def _skip(dispatch: invoke_pb2.Dispatch, code: str, message: str) -> None:
    """Record the pool at chain[position] as a failed attempt (nobody took the dispatch) and
    move on to the next deployment."""
    target = dispatch.chain[dispatch.position]
    dispatch.attempts.add(
        deployment_id=target.deployment_id,
        provider=target.provider,
        model=target.model,
        status=invoke_pb2.STATUS_ERROR,
        error_code=code,
        error_message=message,
    )
    dispatch.position += 1


def _no_worker(provider: str) -> str:
    return f"no worker serves provider {provider!r}"


def _all_busy(provider: str) -> str:
    return f"every {provider!r} worker asked was at its concurrency and queue"
