"""Rebuilding the authority's state after a start or a takeover. Pure: the I/O is in main.py.

Sources, each counted once (docs/budgets.md, "Restart and takeover"):
  ledger  - every request the ledger stored, except the tail's, summed per scope in ONE query
            (one snapshot), which also lists the ids it inserted recently; asked for on the
            typed subject ledger.read.spend (the SQL is the ledger's, services/ledger/reads.py);
  tail    - completion events after the ledger consumer's ack floor (maybe stored, maybe not),
            counted from the events themselves;
  recent  - ids the ledger stored after the tail was read: already in the ledger sum, so the
            live consumer must ignore their events (they are marked settled);
  journal - reservations granted by the previous authority whose request has not completed.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from switchyard.tenancy import TenancyView, request_scopes
from switchyard.v1 import budget_pb2, events_pb2, ledger_pb2

from .authority import Authority
from .periods import day_start_ms, month_start_ms, period_start
from .quotas import QuotaBook

# The ledger's clock and ours may differ (a ClickHouse server elsewhere): ids inserted this
# long before the tail was read still count as "recent". More is safe (a few extra ids).
RECENT_MARGIN_MS = 5_000


def snapshot_query(
    tail_ids: list[str], now_ms: int, tail_read_ms: int, journal_ids: list[str]
) -> ledger_pb2.SpendSnapshotQuery:
    """The typed ask for the ledger's spend snapshot: sums for our day and month, the tail left
    out (it is counted from its events), and which journaled requests the ledger holds."""
    return ledger_pb2.SpendSnapshotQuery(
        tail_request_ids=tail_ids,
        day_start_unix_ms=day_start_ms(now_ms),
        month_start_unix_ms=month_start_ms(now_ms),
        recent_since_unix_ms=tail_read_ms - RECENT_MARGIN_MS,
        journal_request_ids=journal_ids,
    )


def scope_rows(snapshot: ledger_pb2.SpendSnapshot) -> list[dict[str, Any]]:
    """The snapshot's per-scope sums as the rows apply_ledger reads."""
    return [
        {
            "project_id": s.project_id,
            "agent_id": s.agent_id,
            "key_id": s.key_id,
            "total": s.total_usd,
            "month": s.month_usd,
            "day": s.day_usd,
            "recent": list(s.recent_request_ids),
        }
        for s in snapshot.scopes
    ]


def apply_ledger(authority: Authority, rows: list[dict[str, Any]], now_ms: int) -> None:
    """Add the ledger's sums to the current day, month and total of every scope."""
    for row in rows:
        for scope in request_scopes(row["project_id"], row["agent_id"], row["key_id"]):
            for period in ("day", "month", "total"):
                amount = Decimal(row[period] or "0")
                if amount:
                    authority.book.add_spent((scope, period, period_start(period, now_ms)), amount)
        for request_id in row.get("recent") or []:
            authority.book.mark_settled(request_id, now_ms)


def unique_events(events: list[events_pb2.Completion]) -> list[events_pb2.Completion]:
    seen: set[str] = set()
    out = []
    for event in events:
        if event.request_id not in seen:
            seen.add(event.request_id)
            out.append(event)
    return out


def open_journal(
    authority: Authority, journal: list[budget_pb2.AuthorizeRequest], now_ms: int, grace_ms: int
) -> list[budget_pb2.AuthorizeRequest]:
    """Journaled reservations that may still be in flight (not settled, not expired)."""
    out = {}
    for ask in journal:
        if authority.book.is_settled(ask.request_id):
            continue
        if ask.deadline_unix_ms and ask.deadline_unix_ms + grace_ms < now_ms:
            continue
        out[ask.request_id] = ask
    return list(out.values())


def rebuild(
    view: TenancyView,
    ledger_rows: list[dict[str, Any]],
    tail: list[events_pb2.Completion],
    journal: list[budget_pb2.AuthorizeRequest],
    done_ids: set[str],
    now_ms: int,
    grace_ms: int,
    quotas: QuotaBook | None = None,
    leases: Sequence[budget_pb2.LeaseRecord | budget_pb2.LeaseReturn] = (),
) -> Authority:
    """The authority's state from its sources; `done_ids` are journal ids the ledger holds.
    Provider quotas start full, less what the open journaled reservations took. Journaled
    budget leases (grants and returns, oldest first) are held again before the tail settles, so
    the tail's admissions leave them; admissions the ledger already holds stay in them until
    they expire (conservative: held, never under-held)."""
    authority = Authority(view, quotas=quotas)
    apply_ledger(authority, ledger_rows, now_ms)
    for entry in leases:
        if isinstance(entry, budget_pb2.LeaseRecord):
            authority.restore_lease(entry, now_ms, grace_ms)
        else:
            authority.give_back(entry)
    for event in unique_events(tail):
        authority.settle(event, now_ms)
    for ask in open_journal(authority, journal, now_ms, grace_ms):
        if ask.request_id not in done_ids:
            authority.restore(ask, now_ms)
    return authority
