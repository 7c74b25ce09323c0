"""The spend book: money spent and money held (reserved) per scope and period. Pure.

A slot is (scope, period, period start), e.g. ("project:acme", "day", "2026-11-05"). A
reservation holds its amount in every slot of every scope it counts against; settlement
releases the hold and adds the actual cost to the same slots (the period of the moment the
request arrived, as the ledger counts it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from switchyard.tenancy import PERIODS

from .periods import period_start

Slot = tuple[str, str, str]
ZERO = Decimal(0)
# How long a settled request id is remembered, and how many at most (~150 B each: 100,000 is
# ~15 MB). The memory only has to cover what the EVENTS stream's duplicate window (30 min, by
# request id) does not: a router's repeated ask, journaled reservations restored after a
# ledger rebuild (their window is the request timeout plus grace), the ledger's "recent" ids
# during a rebuild (seconds). A takeover from a snapshot needs none (snapshot.py).
SETTLED_MEMORY_MS = 10 * 60 * 1000
MAX_SETTLED_IDS = 100_000


@dataclass
class Counter:
    spent: Decimal = ZERO
    held: Decimal = ZERO


@dataclass(frozen=True)
class Reservation:
    request_id: str
    scopes: tuple[str, ...]
    amount: Decimal
    at_ms: int  # when the request arrived: the periods it counts in
    deadline_ms: int
    tokens: int = 0  # the token estimate taken from tokens-per-minute buckets
    project_id: str = ""
    key_id: str = ""
    deployment_id: str = ""  # the deployment whose provider quota it holds (docs/quotas.md)


@dataclass(frozen=True)
class Change:
    slot: Slot
    before: Decimal
    after: Decimal


def slots_of(scopes: tuple[str, ...] | list[str], at_ms: int) -> list[Slot]:
    return [(scope, period, period_start(period, at_ms)) for scope in scopes for period in PERIODS]


@dataclass
class SpendBook:
    counters: dict[Slot, Counter] = field(default_factory=dict)
    reservations: dict[str, Reservation] = field(default_factory=dict)
    settled: dict[str, int] = field(default_factory=dict)  # request id -> when, oldest first
    max_settled: int = MAX_SETTLED_IDS

    def counter(self, slot: Slot) -> Counter:
        return self.counters.get(slot) or Counter()

    def _counter(self, slot: Slot) -> Counter:
        counter = self.counters.get(slot)
        if counter is None:
            counter = self.counters[slot] = Counter()
        return counter

    def hold(self, reservation: Reservation) -> None:
        if reservation.request_id in self.reservations:
            return
        self.reservations[reservation.request_id] = reservation
        for slot in slots_of(reservation.scopes, reservation.at_ms):
            self._counter(slot).held += reservation.amount

    def adjust_held(self, scopes: tuple[str, ...] | list[str], at_ms: int, delta: Decimal) -> None:
        """Hold (`delta` > 0) or release an amount that is no one request's: a budget lease
        (escrow.py)."""
        for slot in slots_of(scopes, at_ms):
            counter = self._counter(slot)
            counter.held = max(ZERO, counter.held + delta)

    def release(self, request_id: str) -> Reservation | None:
        reservation = self.reservations.pop(request_id, None)
        if reservation is not None:
            for slot in slots_of(reservation.scopes, reservation.at_ms):
                counter = self._counter(slot)
                counter.held = max(ZERO, counter.held - reservation.amount)
        return reservation

    def charge(self, scopes: tuple[str, ...] | list[str], at_ms: int, amount: Decimal) -> list[Change]:
        changes = []
        for slot in slots_of(scopes, at_ms):
            counter = self._counter(slot)
            before = counter.spent
            counter.spent += amount
            changes.append(Change(slot, before, counter.spent))
        return changes

    def add_spent(self, slot: Slot, amount: Decimal) -> None:
        self._counter(slot).spent += amount

    def is_settled(self, request_id: str) -> bool:
        return request_id in self.settled

    def mark_settled(self, request_id: str, now_ms: int) -> None:
        """Remember a settled id; past `max_settled` the oldest is forgotten (a dict keeps
        insertion order, so the first key is the oldest)."""
        if request_id in self.settled:
            return
        self.settled[request_id] = now_ms
        if len(self.settled) > self.max_settled:
            del self.settled[next(iter(self.settled))]

    def settle(
        self,
        request_id: str,
        scopes: tuple[str, ...] | list[str],
        at_ms: int,
        actual: Decimal,
        now_ms: int,
    ) -> tuple[Reservation | None, list[Change]] | None:
        """Release the hold and count the actual cost once. None: already settled."""
        if request_id in self.settled:
            return None
        reservation = self.release(request_id)
        if reservation is not None:  # count where it was reserved
            scopes, at_ms = reservation.scopes, reservation.at_ms
        self.mark_settled(request_id, now_ms)
        changes = self.charge(scopes, at_ms, actual) if actual else []
        return reservation, changes

    def expired(self, now_ms: int, grace_ms: int) -> list[Reservation]:
        """Release reservations whose request is past its deadline plus grace."""
        late = [r for r in self.reservations.values() if r.deadline_ms + grace_ms < now_ms]
        for reservation in late:
            self.release(reservation.request_id)
        return late

    def prune(self, now_ms: int) -> None:
        """Forget old settled ids and counters of finished periods that hold nothing."""
        cutoff = now_ms - SETTLED_MEMORY_MS
        while self.settled:  # oldest first: stop at the first id young enough to keep
            oldest = next(iter(self.settled))
            if self.settled[oldest] >= cutoff:
                break
            del self.settled[oldest]
        current = {period: period_start(period, now_ms) for period in PERIODS}
        for slot in [s for s, c in self.counters.items() if s[2] != current[s[1]] and not c.held]:
            del self.counters[slot]
