"""The budget authority's state as a snapshot on the bus, so that a successor takes over without
the ledger, and so that month and total spend outlive the ledger's retention. Pure: main.py
writes and reads it (a KV key, docs/budgets.md "Restart and takeover").

A snapshot is exact at two stream positions:
  events_seq   - the EVENTS stream sequence of the last completion event it has settled: its
                 successor settles every event after it, each exactly once, so no settled-id
                 memory has to be carried across a takeover;
  journal_seq  - the reservation journal's last sequence, read *before* the state was copied.
                 The leader holds a reservation before it journals it, so every journaled
                 reservation up to journal_seq that is still open is among the snapshot's
                 reservations; one that is not was settled, expired or refused (journal write
                 not acknowledged) before the copy, and must not be restored. Later entries
                 are restored unless their completion is among the events after events_seq.

The spend counters carry forward from snapshot to snapshot, so a month or total cap counts
everything since the authority first counted, whatever the ledger still keeps.

Budget leases out at routers (escrow.py) are carried like reservations: a grant or a return
journaled after journal_seq is applied again (`restore`); version 2 added them (a version 1
snapshot reads as one without leases).

JSON, not protobuf: only budget processes write and read it, and its version field says which
shape it has (an unknown version is not used: the successor rebuilds from the ledger instead).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import orjson

from switchyard.tenancy import TenancyView
from switchyard.v1 import budget_pb2, events_pb2

from .authority import Authority
from .book import Reservation, Slot, SpendBook
from .escrow import Lease
from .quotas import QuotaBook

VERSION = 2
READS = (1, 2)


@dataclass(frozen=True)
class JournalEntry:
    """One journal message: a reservation, a lease grant or a lease return (exactly one set)."""

    seq: int
    ask: budget_pb2.AuthorizeRequest | None = None
    lease: budget_pb2.LeaseRecord | None = None
    returned: budget_pb2.LeaseReturn | None = None


@dataclass(frozen=True)
class Snapshot:
    events_seq: int
    journal_seq: int
    taken_ms: int
    spent: dict[Slot, Decimal]
    reservations: tuple[Reservation, ...]
    leases: tuple[Lease, ...] = ()


def take(
    book: SpendBook, events_seq: int, journal_seq: int, now_ms: int, leases: tuple[Lease, ...] = ()
) -> Snapshot:
    """The book's state now (call it with no await between reading the positions' state and
    this, so that the copy is exact at them)."""
    return Snapshot(
        events_seq=events_seq,
        journal_seq=journal_seq,
        taken_ms=now_ms,
        spent={slot: counter.spent for slot, counter in book.counters.items() if counter.spent},
        reservations=tuple(book.reservations.values()),
        leases=tuple(Lease(**{**vars(lease), "settled": set(lease.settled)}) for lease in leases),
    )


def encode(snapshot: Snapshot) -> bytes:
    return orjson.dumps(
        {
            "version": VERSION,
            "events_seq": snapshot.events_seq,
            "journal_seq": snapshot.journal_seq,
            "taken_ms": snapshot.taken_ms,
            "spent": [[*slot, str(amount)] for slot, amount in snapshot.spent.items()],
            "reservations": [
                {
                    "request_id": r.request_id,
                    "scopes": list(r.scopes),
                    "amount": str(r.amount),
                    "at_ms": r.at_ms,
                    "deadline_ms": r.deadline_ms,
                    "tokens": r.tokens,
                    "project_id": r.project_id,
                    "key_id": r.key_id,
                    "deployment_id": r.deployment_id,
                }
                for r in snapshot.reservations
            ],
            "leases": [
                {
                    "lease_id": lease.lease_id,
                    "router_id": lease.router_id,
                    "scopes": list(lease.scopes),
                    "project_id": lease.project_id,
                    "agent_id": lease.agent_id,
                    "key_id": lease.key_id,
                    "amount": str(lease.amount),
                    "held": str(lease.held),
                    "at_ms": lease.at_ms,
                    "hold_until_ms": lease.hold_until_ms,
                    "settled": sorted(lease.settled),
                }
                for lease in snapshot.leases
            ],
        }
    )


def decode(data: bytes) -> Snapshot:
    """The snapshot in `data`; ValueError when it is not one this build reads."""
    try:
        raw = orjson.loads(data)
        if raw.get("version") not in READS:
            raise ValueError(f"snapshot version {raw.get('version')!r}, this build reads {READS}")
        return Snapshot(
            events_seq=int(raw["events_seq"]),
            journal_seq=int(raw["journal_seq"]),
            taken_ms=int(raw["taken_ms"]),
            spent={(scope, period, start): Decimal(amount) for scope, period, start, amount in raw["spent"]},
            reservations=tuple(
                Reservation(
                    request_id=r["request_id"],
                    scopes=tuple(r["scopes"]),
                    amount=Decimal(r["amount"]),
                    at_ms=int(r["at_ms"]),
                    deadline_ms=int(r["deadline_ms"]),
                    tokens=int(r["tokens"]),
                    project_id=r["project_id"],
                    key_id=r["key_id"],
                    deployment_id=r["deployment_id"],
                )
                for r in raw["reservations"]
            ),
            leases=tuple(
                Lease(
                    lease_id=x["lease_id"],
                    router_id=x["router_id"],
                    scopes=tuple(x["scopes"]),
                    project_id=x["project_id"],
                    agent_id=x["agent_id"],
                    key_id=x["key_id"],
                    amount=Decimal(x["amount"]),
                    held=Decimal(x["held"]),
                    at_ms=int(x["at_ms"]),
                    hold_until_ms=int(x["hold_until_ms"]),
                    settled=set(x["settled"]),
                )
                for x in raw.get("leases", [])
            ),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ArithmeticError, AttributeError) as exc:
        raise ValueError(f"not a budget snapshot: {exc}") from exc


def restore(
    view: TenancyView,
    snapshot: Snapshot,
    journal: list[JournalEntry] | list[tuple[int, budget_pb2.AuthorizeRequest]],
    now_ms: int,
    grace_ms: int,
    quotas: QuotaBook | None = None,
) -> Authority:
    """The authority as the snapshot left it, with the reservations and leases journaled after
    it (and the provider quota the open reservations hold), and the lease returns journaled
    after it applied; the caller then settles the events after `events_seq`. `journal` is
    oldest first."""
    authority = Authority(view, quotas=quotas)
    for slot, amount in snapshot.spent.items():
        authority.book.add_spent(slot, amount)
    for reservation in snapshot.reservations:
        authority.book.hold(reservation)
    for lease in snapshot.leases:
        copy = Lease(**{**vars(lease), "settled": set(lease.settled)})
        authority.book.adjust_held(copy.scopes, copy.at_ms, copy.held)
        authority.leases[copy.lease_id] = copy
    for item in journal:
        entry = JournalEntry(item[0], ask=item[1]) if isinstance(item, tuple) else item
        if entry.ask is not None:
            ask = entry.ask
            if ask.deadline_unix_ms and ask.deadline_unix_ms + grace_ms < now_ms:
                continue  # past its deadline: its hold would be released at once anyway
            if entry.seq > snapshot.journal_seq or ask.request_id in authority.book.reservations:
                authority.restore(ask, now_ms)  # holds it (if new) and takes its provider quota
        elif entry.lease is not None and entry.seq > snapshot.journal_seq:
            authority.restore_lease(entry.lease, now_ms, grace_ms)  # granted after the copy
        elif entry.returned is not None and entry.seq > snapshot.journal_seq:
            authority.give_back(entry.returned)  # returned after the copy (once: then it is gone)
    return authority


def settle_all(authority: Authority, events: list[events_pb2.Completion], now_ms: int) -> None:
    """Settle the events after the snapshot, in stream order (each once: the stream holds one
    event per request id, its duplicates are dropped by message id)."""
    for event in events:
        authority.settle(event, now_ms)
