"""Which routed requests still have a live worker: the router's watch over work in flight.

A worker killed mid-request (SIGKILL, OOM, a lost node) sends nothing more, so without a watch
its client waits for its deadline, the ledger never hears of it and its budget hold stays.
Workers therefore beat on the bus (`workers.beat`, liveness.proto) every interval while they
hold requests, listing those they hold and those they finished since the last beat. The router
that handed a request off watches it here: a request no beat has held for `lost_after_s`
(a few intervals), and that no beat reported done, has lost its worker. A request handed from
one pool to another is listed by the next worker from its receipt, so it never looks lost.

Pure: the router feeds beats and the clock in and acts on what `lost` returns.
"""

from __future__ import annotations

from dataclasses import dataclass

from switchyard.v1 import invoke_pb2, liveness_pb2

# A request whose deadline passed this long ago is forgotten even if no beat ended it (bounds
# the table when a beat was lost; its worker's own deadline ended it long before).
FORGET_AFTER_DEADLINE_S = 60.0


@dataclass
class Watched:
    """One routed request and what the beats said of it."""

    dispatch: invoke_pb2.Dispatch
    last_held: float  # monotonic: the hand-off, then each beat that listed it
    forget_at: float
    deployment_id: str = ""  # where its worker last said it was
    redispatched: bool = False  # already given to another worker once after a loss
    used: invoke_pb2.Usage | None = None  # what the provider bills for it so far, per its worker
    used_cost_usd: str = ""
    record: bytes = b""  # its Completion, finished but not yet stored by its worker
    finished: bool = False  # answered or refused by its worker, its record not stored yet


class LivenessBook:
    def __init__(self, lost_after_s: float) -> None:
        self.lost_after_s = lost_after_s
        self._watched: dict[str, Watched] = {}

    def __len__(self) -> int:
        return len(self._watched)

    def watch(
        self, dispatch: invoke_pb2.Dispatch, now: float, remaining_s: float, redispatched: bool = False
    ) -> None:
        """Start watching a request just handed off (`remaining_s`: to its deadline)."""
        target = dispatch.chain[dispatch.position] if dispatch.position < len(dispatch.chain) else None
        self._watched[dispatch.request.request_id] = Watched(
            dispatch=dispatch,
            last_held=now,
            forget_at=now + max(remaining_s, 0.0) + FORGET_AFTER_DEADLINE_S,
            deployment_id=target.deployment_id if target is not None else "",
            redispatched=redispatched,
        )

    def get(self, request_id: str) -> Watched | None:
        return self._watched.get(request_id)

    def forget(self, request_id: str) -> Watched | None:
        """Stop watching a request the router ended itself (no pool took it)."""
        return self._watched.pop(request_id, None)

    def observe(self, beat: liveness_pb2.WorkerBeat, now: float) -> None:
        for held in beat.held:
            watched = self._watched.get(held.request_id)
            if watched is not None:
                watched.last_held = now
                # Its worker still answers for it (a record can wait past the deadline while
                # the events stream is down): not forgotten while a beat lists it.
                watched.forget_at = max(watched.forget_at, now + FORGET_AFTER_DEADLINE_S)
                if held.deployment_id:
                    watched.deployment_id = held.deployment_id
                if held.HasField("used"):
                    watched.used = held.used
                    watched.used_cost_usd = held.used_cost_usd
                if held.unstored_record:
                    watched.record = held.unstored_record
                watched.finished = watched.finished or held.finished
        for request_id in beat.done:
            self._watched.pop(request_id, None)

    def stalled(self, seconds: float) -> None:
        """This router's own loop stood still for `seconds` (CPU starvation, a long GC): the
        beats that arrived meanwhile are not read yet, so no request counts that time against
        its worker."""
        for watched in self._watched.values():
            watched.last_held += seconds

    def lost(self, now: float) -> list[Watched]:
        """The requests whose worker is gone, removed from the watch (the caller ends them)."""
        gone = [w for w in self._watched.values() if now - w.last_held > self.lost_after_s]
        for watched in gone:
            del self._watched[watched.dispatch.request.request_id]
        for request_id in [r for r, w in self._watched.items() if now > w.forget_at]:
            del self._watched[request_id]
        return [w for w in gone if now <= w.forget_at]
