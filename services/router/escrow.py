"""Budget leases (escrow), the router's side: admitting a request from a lease the budget
authority granted, without a bus message, and knowing when to renew or give a lease back. Pure:
the caller passes the time (docs/budgets.md, "Leases").

A lease covers one (project, agent, key). A request fits a lease when, at once: the lease's
admit window is open, it has a request and the request's hold left, the request's deadline is
before the lease's `hold_until` (the authority keeps the lease held at least that long) and the
request was received on the lease's UTC day (the periods it holds in). Anything else is decided
by the authority, per request, as before leases existed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from switchyard.pricing import format_usd
from switchyard.v1 import budget_pb2

DAY_MS = 86_400_000
# Renew in the background once a scope's live leases have at most this share of the newest
# one's amount (or requests) left, or once this share of its admit window has passed.
RENEW_LEFT = 0.5
RENEW_ELAPSED = 0.5

ScopeKey = tuple[str, str, str]  # (project, agent, key)


def _usd(text: str) -> Decimal:
    try:
        value = Decimal(text or "0")
    except InvalidOperation:
        return Decimal(0)
    return value if value.is_finite() and value > 0 else Decimal(0)


@dataclass(frozen=True)
class Admitted:
    request_id: str
    hold: Decimal
    deadline_ms: int


@dataclass
class RouterLease:
    lease_id: str
    amount: Decimal
    requests: int
    remaining: Decimal
    requests_left: int
    capped: bool
    opened: float  # monotonic, when the grant arrived
    admit_until: float  # monotonic
    hold_until_ms: int
    day: int
    admitted: list[Admitted] = field(default_factory=list)

    @classmethod
    def of(cls, grant: budget_pb2.LeaseGrant, now: float) -> RouterLease:
        amount = _usd(grant.amount_usd)
        return cls(
            lease_id=grant.lease_id,
            amount=amount,
            requests=grant.requests,
            remaining=amount,
            requests_left=grant.requests,
            capped=grant.capped,
            opened=now,
            admit_until=now + grant.ttl_ms / 1000,
            hold_until_ms=grant.hold_until_unix_ms,
            day=grant.at_unix_ms // DAY_MS,
        )

    def open(self, now: float) -> bool:
        return now < self.admit_until

    def fits(self, hold: Decimal, deadline_ms: int, received_ms: int, now: float) -> bool:
        return (
            self.open(now)
            and self.requests_left >= 1
            and hold <= self.remaining
            and deadline_ms <= self.hold_until_ms
            and received_ms // DAY_MS == self.day
        )

    def take(self, request_id: str, hold: Decimal, deadline_ms: int) -> None:
        self.remaining -= hold
        self.requests_left -= 1
        self.admitted.append(Admitted(request_id, hold, deadline_ms))

    def to_return(self) -> budget_pb2.LeaseReturn:
        out = budget_pb2.LeaseReturn(lease_id=self.lease_id)
        for a in self.admitted:
            out.admissions.add(
                request_id=a.request_id, held_usd=format_usd(a.hold), deadline_unix_ms=a.deadline_ms
            )
        return out


class Escrow:
    """One router's leases, per scope key, and the closed ones waiting to be given back."""

    def __init__(self) -> None:
        self.leases: dict[ScopeKey, list[RouterLease]] = {}
        self.returns: list[budget_pb2.LeaseReturn] = []  # closed leases, to give back

    def admit(
        self, key: ScopeKey, request_id: str, hold: Decimal, deadline_ms: int, received_ms: int, now: float
    ) -> RouterLease | None:
        """Take the request's hold from the first of the scope's leases it fits (None: none)."""
        for lease in self.leases.get(key, ()):
            if lease.fits(hold, deadline_ms, received_ms, now):
                lease.take(request_id, hold, deadline_ms)
                return lease
        return None

    def add(self, key: ScopeKey, grant: budget_pb2.LeaseGrant, now: float) -> RouterLease | None:
        if not grant.lease_id:
            return None
        lease = RouterLease.of(grant, now)
        self.leases.setdefault(key, []).append(lease)
        return lease

    def wants_renewal(self, key: ScopeKey, now: float) -> bool:
        """Whether to ask for the scope's next lease now, before its live ones run dry."""
        live = [lease for lease in self.leases.get(key, ()) if lease.open(now)]
        if not live:
            return False
        newest = live[-1]
        if (now - newest.opened) > RENEW_ELAPSED * (newest.admit_until - newest.opened):
            return True
        left = sum((lease.remaining for lease in live), Decimal(0))
        requests_left = sum(lease.requests_left for lease in live)
        return (
            left <= newest.amount * Decimal(str(RENEW_LEFT)) or requests_left <= newest.requests * RENEW_LEFT
        )

    def close(self, key: ScopeKey, now: float, hold: Decimal | None = None) -> None:
        """Close the scope's leases whose window has ended, or (with `hold`) that cannot admit a
        request of that hold any more: they are given back with the next message."""
        keep = []
        for lease in self.leases.get(key, ()):
            spent = hold is not None and (lease.remaining < hold or lease.requests_left < 1)
            if lease.open(now) and not spent:
                keep.append(lease)
            else:
                self.returns.append(lease.to_return())
        if keep:
            self.leases[key] = keep
        else:
            self.leases.pop(key, None)

    def revoke(self, lease_ids: set[str]) -> bool:
        """Close these leases (the authority revoked them). True when any was held here."""
        found = False
        for key in list(self.leases):
            keep = []
            for lease in self.leases[key]:
                if lease.lease_id in lease_ids:
                    self.returns.append(lease.to_return())
                    found = True
                else:
                    keep.append(lease)
            if keep:
                self.leases[key] = keep
            else:
                del self.leases[key]
        return found

    def close_expired(self, now: float) -> None:
        for key in list(self.leases):
            self.close(key, now)

    def close_all(self) -> None:
        for leases in self.leases.values():
            self.returns.extend(lease.to_return() for lease in leases)
        self.leases.clear()

    def take_returns(self) -> list[budget_pb2.LeaseReturn]:
        out, self.returns = self.returns, []
        return out

    def requeue(self, returns: list[budget_pb2.LeaseReturn]) -> None:
        """Returns the authority did not get (it was changing leader): sent again later. Until
        then it holds the leases (never less than it should)."""
        self.returns.extend(returns)
