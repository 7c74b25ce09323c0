"""Budget leases (escrow), the router's side: admitting a request from a lease the budget
authority granted, without a bus message, and knowing when to renew or give a lease back. Pure:
the caller passes the time (docs/budgets.md, "Leases").

A lease covers one (project, agent, key). A request fits a lease when, at once: the lease's
admit window is open, it has a request and the request's hold left, the request's deadline is
before the lease's `hold_until` (the authority keeps the lease held at least that long) and the
request was received on the lease's UTC day (the periods it holds in) and, on a scope with a TPM
limit, its TPM estimate fits in the lease's tokens left. Anything else is decided by the
authority, per request, as before leases existed.

A lease on a rate-limited scope starts its admit window when the router SENT its ask, not when
the grant arrived: the authority starts it when it grants, later than that, so the router stops
admitting before the authority counts the lease's rate-limit slices as used (docs/budgets.md,
"Leases on rate-limited scopes"). Other leases start it on arrival (their bound rests on the
requests' deadlines, and a grant slowed by a busy authority keeps its whole window).
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
# How many revoked lease ids not (yet) held here, and returns sent, a router remembers:
# revocations are rare (a tenancy change, a recall at a cap or a rate limit), a grant overtaken
# by its revocation arrives within ms, and a lost return is recalled within seconds of a takeover.
REVOKED_MEMORY = 256


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
    tokens: int = 0


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
    tokens: int = 0  # granted
    tokens_left: int = 0

    @classmethod
    def of(cls, grant: budget_pb2.LeaseGrant, now: float, sent: float | None = None) -> RouterLease:
        """The lease of `grant`, arrived at `now` for an ask sent at `sent` (a rate lease's
        window starts then: never later than the authority started it)."""
        amount = _usd(grant.amount_usd)
        start = min(sent, now) if grant.rate_limited and sent is not None else now
        return cls(
            lease_id=grant.lease_id,
            amount=amount,
            requests=grant.requests,
            remaining=amount,
            requests_left=grant.requests,
            capped=grant.capped,
            opened=start,
            admit_until=start + grant.ttl_ms / 1000,
            hold_until_ms=grant.hold_until_unix_ms,
            day=grant.at_unix_ms // DAY_MS,
            tokens=grant.tokens,
            tokens_left=grant.tokens,
        )

    @property
    def tokens_limited(self) -> bool:
        """A TPM limit applies (the grant lent tokens): admissions take their estimate."""
        return self.tokens > 0

    def open(self, now: float) -> bool:
        return now < self.admit_until

    def fits(self, hold: Decimal, deadline_ms: int, received_ms: int, now: float, tokens: int = 0) -> bool:
        return (
            self.open(now)
            and self.requests_left >= 1
            and hold <= self.remaining
            and (not self.tokens_limited or tokens <= self.tokens_left)
            and deadline_ms <= self.hold_until_ms
            and received_ms // DAY_MS == self.day
        )

    def take(self, request_id: str, hold: Decimal, deadline_ms: int, tokens: int = 0) -> None:
        self.remaining -= hold
        self.requests_left -= 1
        taken = tokens if self.tokens_limited else 0
        self.tokens_left -= taken
        self.admitted.append(Admitted(request_id, hold, deadline_ms, taken))

    def to_return(self) -> budget_pb2.LeaseReturn:
        out = budget_pb2.LeaseReturn(lease_id=self.lease_id)
        for a in self.admitted:
            out.admissions.add(
                request_id=a.request_id,
                held_usd=format_usd(a.hold),
                deadline_unix_ms=a.deadline_ms,
                tokens=a.tokens,
            )
        return out


class Escrow:
    """One router's leases, per scope key, and the closed ones waiting to be given back."""

    def __init__(self) -> None:
        self.leases: dict[ScopeKey, list[RouterLease]] = {}
        self.returns: list[budget_pb2.LeaseReturn] = []  # closed leases, to give back
        # Revoked before their grant arrived (the authority recalls a lease it has just granted;
        # the revocation can overtake the grant): such a grant is given back unused at once.
        self.revoked_early: dict[str, None] = {}
        # The latest returns sent (REVOKED_MEMORY): a new leader that never got one (its
        # predecessor died before journaling it) recalls the lease, and gets it again.
        self.sent: dict[str, budget_pb2.LeaseReturn] = {}

    def admit(
        self,
        key: ScopeKey,
        request_id: str,
        hold: Decimal,
        deadline_ms: int,
        received_ms: int,
        now: float,
        tokens: int = 0,
    ) -> RouterLease | None:
        """Take the request's hold (and, under a TPM limit, its TPM estimate `tokens`) from the
        first of the scope's leases it fits (None: none)."""
        for lease in self.leases.get(key, ()):
            if lease.fits(hold, deadline_ms, received_ms, now, tokens):
                lease.take(request_id, hold, deadline_ms, tokens)
                return lease
        return None

    def add(
        self, key: ScopeKey, grant: budget_pb2.LeaseGrant, now: float, sent: float | None = None
    ) -> RouterLease | None:
        if not grant.lease_id:
            return None
        lease = RouterLease.of(grant, now, sent)
        if grant.lease_id in self.revoked_early:
            del self.revoked_early[grant.lease_id]
            self.returns.append(lease.to_return())
            return None
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
        if newest.tokens_limited and sum(lease.tokens_left for lease in live) <= newest.tokens * RENEW_LEFT:
            return True
        return (
            left <= newest.amount * Decimal(str(RENEW_LEFT)) or requests_left <= newest.requests * RENEW_LEFT
        )

    def close(self, key: ScopeKey, now: float, hold: Decimal | None = None, tokens: int = 0) -> None:
        """Close the scope's leases whose window has ended, or (with `hold`) that cannot admit a
        request of that hold (and TPM estimate `tokens`) any more: they are given back with the
        next message."""
        keep = []
        for lease in self.leases.get(key, ()):
            spent = hold is not None and (
                lease.remaining < hold
                or lease.requests_left < 1
                or (lease.tokens_limited and lease.tokens_left < tokens)
            )
            if lease.open(now) and not spent:
                keep.append(lease)
            else:
                self.returns.append(lease.to_return())
        if keep:
            self.leases[key] = keep
        else:
            self.leases.pop(key, None)

    def revoke(self, lease_ids: set[str]) -> bool:
        """Close these leases (the authority revoked them). True when any was held here. Ids
        not held here may be this router's leases whose grant has not arrived yet: remembered
        (the latest REVOKED_MEMORY), so that such a grant is given back at once (`add`)."""
        found = False
        held = {lease.lease_id for leases in self.leases.values() for lease in leases}
        for lease_id in lease_ids - held:
            again = self.sent.get(lease_id)
            if again is not None:
                self.returns.append(again)  # returns are idempotent at the authority
            else:
                self.revoked_early[lease_id] = None
        while len(self.revoked_early) > REVOKED_MEMORY:
            del self.revoked_early[next(iter(self.revoked_early))]
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
        for returned in out:
            self.sent[returned.lease_id] = returned
        while len(self.sent) > REVOKED_MEMORY:
            del self.sent[next(iter(self.sent))]
        return out

    def requeue(self, returns: list[budget_pb2.LeaseReturn]) -> None:
        """Returns the authority did not get (it was changing leader): sent again later. Until
        then it holds the leases (never less than it should)."""
        self.returns.extend(returns)
