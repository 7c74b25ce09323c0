"""Budget leases (escrow), the authority's side: how large a lease is, what it holds, and how its
admissions settle, come back or expire. Pure: the authority calls it on its one event loop.

A lease is a hold like a reservation's, in every slot of every scope of one (project, agent,
key), granted to one router instance, which admits requests from it locally (no bus message)
until its admit window ends. What the lease holds only shrinks while it is out:
  - a completion admitted from it moves that request's hold out of the lease (`settle`), and the
    request's actual cost is counted as spend, as for a reservation;
  - a return converts the admissions not yet settled into ordinary reservations (held until
    settled, or their deadline plus grace) and releases the rest (`give_back`);
  - a lease never returned (its router died) is released whole at `hold_until_ms` plus grace,
    when every request it can have admitted is past its deadline plus grace (`expired`).
So spent + held (leases included) never passes a cap: every admission's hold was inside a lease
that was itself checked against the cap when granted (docs/budgets.md, "Leases").

On a scope with rate limits (RPS, TPM on its project or key) a lease also carries a slice of each
bucket: `requests` from every RPS bucket and `requests * tokens per request` from every TPM bucket,
lent when granted (buckets.py: a bucket refills only up to its capacity less what it lent). Such a
lease's window is at most `RATE_WINDOW_MS`; its slice goes back to the buckets when the lease is
returned (less what it admitted) or, never returned, stays counted as used until `rate_until_ms`,
after the router can no longer admit from it (docs/budgets.md, "Leases on rate-limited scopes").

At a cap, a lease's unused rest must not refuse a request that per-request decisions would have
let in (issue 15: leases may not make exactness worse). So a request denied while leases hold
enough in the slots it is short in names them (`to_recall`): the authority recalls them (their
routers give them back at once) and decides the request again when they are back, or when a
short wait has passed: a lease not back by then (a dead router) is not waited for again, and
the denial stands (docs/budgets.md, "At the cap"). A rate-limit refusal does the same with the
leases that may hold unused slices of the buckets it is short in (`rate_to_recall`): near the
limit, a slice one router holds with no request for it would otherwise refuse another router's
requests while the key is under its limit. Both choose with `_covering`, and the authority
recalls and waits the same way for either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Generic, TypeVar

from switchyard.tenancy import TenancyView

from .book import ZERO, Reservation, Slot, SpendBook, slots_of

DAY_MS = 86_400_000
T = TypeVar("T")
K = TypeVar("K")  # what a recall covers: a cap's slot, or a rate-limit bucket's name
N = TypeVar("N", Decimal, float)  # money (caps) or requests and tokens (buckets)
# A lease whose admit window would end sooner than this (the UTC day is ending) is not granted.
MIN_WINDOW_MS = 100
# A lease on a rate-limited scope admits for at most one second (the RPS bucket's span), and
# its slice of the buckets is held this much longer, for its router's return to arrive with
# what it did not use (after that the slice counts as used: never more admitted, maybe fewer).
RATE_WINDOW_MS = 1000
RATE_RETURN_GRACE_MS = 1500


@dataclass
class Lease:
    lease_id: str
    router_id: str
    scopes: tuple[str, ...]
    project_id: str
    agent_id: str
    key_id: str
    amount: Decimal  # granted
    held: Decimal  # still held: the amount less the holds of admissions already settled
    at_ms: int  # the periods it holds in (admissions must be received on the same UTC day)
    hold_until_ms: int  # every admission's deadline is before this
    settled: set[str] = field(default_factory=set)  # admissions settled from the lease
    # Rate limits (0 / () when none): what it lent from each bucket named in `rate_buckets`
    # (RPS buckets lent `rate_requests`, TPM buckets `rate_tokens`), until it is returned or
    # `rate_until_ms` passes.
    rate_requests: int = 0
    rate_tokens: int = 0
    rate_buckets: tuple[str, ...] = ()
    rate_until_ms: int = 0
    # The TPM estimates of the admissions settled from it (as `settled` counts its requests):
    # what of its slices is surely used, so a rate recall does not ask for what is known gone.
    settled_tokens: int = 0


def lease_units(
    unit: Decimal, headroom: Decimal | None, share: float, max_requests: int, min_requests: int
) -> int:
    """How many requests like the asking one (hold `unit`) a new lease admits: at most `share`
    of the headroom left under the tightest cap (None: no cap applies), at most `max_requests`;
    0 when fewer than `min_requests` fit: then the router asks per request, so the last requests
    before a cap are decided one by one, exactly."""
    if headroom is None or unit <= 0:
        units = max_requests
    else:
        units = min(max_requests, int(max(headroom, ZERO) * Decimal(str(share)) / unit))
    return units if units >= min_requests else 0


def rate_units(
    units: int,
    requests_room: list[float],
    tokens_room: list[float],
    tokens_per_request: int,
    share: float,
    min_requests: int,
) -> int:
    """Cut a lease of `units` requests to what the rate-limit buckets allow: at most `share` of
    what each RPS bucket holds (a bucket holds one second's allowance at most) and of what each
    TPM bucket holds, in requests of `tokens_per_request`; 0 below `min_requests`, so a scope
    whose buckets are near empty is decided per request, each request exactly as without
    leases."""
    for room in requests_room:
        units = min(units, int(share * max(room, 0.0)))
    if tokens_per_request > 0:
        for room in tokens_room:
            units = min(units, int(share * max(room, 0.0) / tokens_per_request))
    return units if units >= min_requests else 0


def is_rps(bucket_name: str) -> bool:
    """Bucket names are `rps|<scope>` and `tpm|<scope>` (authority.py)."""
    return bucket_name.startswith("rps|")


def rate_unused(lease: Lease, admissions: list[Admission]) -> tuple[int, int]:
    """What a returned lease did not use of its RPS and TPM slices."""
    used_requests = len({a.request_id for a in admissions})
    used_tokens = sum(a.tokens for a in admissions)
    return max(lease.rate_requests - used_requests, 0), max(lease.rate_tokens - used_tokens, 0)


def admit_window_ms(now_ms: int, ttl_ms: int) -> int:
    """The admit window from now: the TTL, cut at the end of the UTC day (a lease holds in one
    day's slots; month and total boundaries fall on day boundaries too)."""
    return min(ttl_ms, (now_ms // DAY_MS + 1) * DAY_MS - now_ms)


def grant(book: SpendBook, lease: Lease) -> None:
    book.adjust_held(lease.scopes, lease.at_ms, lease.held)


def settle(book: SpendBook, lease: Lease, request_id: str, hold: Decimal, tokens: int = 0) -> None:
    """A request admitted from `lease` completed: its hold leaves the lease (the caller counts
    its actual cost as spend); `tokens`, the TPM estimate it took, is known used."""
    if request_id in lease.settled:
        return
    lease.settled.add(request_id)
    lease.settled_tokens += max(tokens, 0)
    taken = min(max(hold, ZERO), lease.held)
    lease.held -= taken
    book.adjust_held(lease.scopes, lease.at_ms, -taken)


@dataclass(frozen=True)
class Admission:
    request_id: str
    hold: Decimal
    deadline_ms: int
    tokens: int = 0  # its TPM estimate (rate-limited leases)


def give_back(book: SpendBook, lease: Lease, admissions: list[Admission]) -> list[Reservation]:
    """The router returned `lease`: its admissions still open become reservations (never more
    than the lease still holds), the rest of the lease is released. Returns the reservations."""
    book.adjust_held(lease.scopes, lease.at_ms, -lease.held)
    left = lease.held
    lease.held = ZERO
    out = []
    for admission in admissions:
        if admission.request_id in lease.settled or book.is_settled(admission.request_id):
            continue
        if admission.request_id in book.reservations:
            continue
        hold = min(max(admission.hold, ZERO), left)
        left -= hold
        reservation = Reservation(
            request_id=admission.request_id,
            scopes=lease.scopes,
            amount=hold,
            at_ms=lease.at_ms,
            deadline_ms=admission.deadline_ms or lease.hold_until_ms,
            tokens=admission.tokens,  # settlement corrects the TPM buckets to its actual usage
            project_id=lease.project_id,
            key_id=lease.key_id,
        )
        book.hold(reservation)
        out.append(reservation)
    return out


def expired(book: SpendBook, leases: dict[str, Lease], now_ms: int, grace_ms: int) -> list[Lease]:
    """Release the leases whose every possible admission is past its deadline plus grace (their
    router never gave them back: it died, or its return was lost)."""
    late = [lease for lease in leases.values() if lease.hold_until_ms + grace_ms < now_ms]
    for lease in late:
        del leases[lease.lease_id]
        book.adjust_held(lease.scopes, lease.at_ms, -lease.held)
        lease.held = ZERO
    return late


@dataclass(frozen=True)
class LeasePolicy:
    """The lease knobs (settings budget_escrow_*; docs/budgets.md, "Leases")."""

    ttl_ms: int = 2000
    share: float = 0.25
    max_requests: int = 64
    min_requests: int = 4
    request_timeout_ms: int = 120_000  # the longest deadline a request gets (its hold's life)


def touched(leases: dict[str, Lease], kv_key: str, view: TenancyView) -> list[str]:
    """The leases a tenancy change may make too generous (a cap set or lowered, a limit or a
    record changed): revoked, so their routers give them back at once. A budget removed makes
    no lease too generous."""
    kind, _, rest = kv_key.partition(".")
    if kind == "project":
        return [lease.lease_id for lease in leases.values() if lease.project_id == rest]
    if kind == "agent":
        project_id, _, agent_id = rest.partition(".")
        return [
            lease.lease_id
            for lease in leases.values()
            if lease.project_id == project_id and lease.agent_id == agent_id
        ]
    if kind == "key":
        return [lease.lease_id for lease in leases.values() if lease.key_id == rest]
    if kind == "budget":
        budget = view.budgets.get(rest)
        if budget is None:
            return []
        return [
            lease.lease_id
            for lease in leases.values()
            if not budget.project_id or lease.project_id == budget.project_id
        ]
    return []


def _covering(
    leases: Iterable[Lease],
    short: dict[K, N],
    deaf: set[str],
    unused: Callable[[Lease], dict[K, N]],
) -> tuple[str, ...]:
    """Every lease that may hold something unused (`unused`) of what a refused request is
    `short` of (by how much), when together they may hold at least that much of every such
    thing; () when even all of them back could not let it in (the refusal stands). Leases in
    `deaf` (recalled already and not given back in time: a dead router) are not counted."""
    chosen: list[str] = []
    cover: dict[K, list[N]] = {key: [] for key in short}
    for lease in leases:
        if lease.lease_id in deaf:
            continue
        hit = {key: amount for key, amount in unused(lease).items() if key in cover and amount > 0}
        if hit:
            chosen.append(lease.lease_id)
            for key, amount in hit.items():
                cover[key].append(amount)
    if not chosen or any(sum(cover[key]) < need for key, need in short.items()):
        return ()
    return tuple(chosen)


def to_recall(leases: Iterable[Lease], short: dict[Slot, Decimal], deaf: set[str]) -> tuple[str, ...]:
    """The leases to recall so that a request denied at a cap may fit: every lease holding in a
    slot the request is `short` in, when together they hold at least that much in every such
    slot (`_covering`). What a lease holds includes what its router admitted and has not
    settled yet (the authority cannot tell), so a recall may free less than that: the request
    is then denied after all."""

    def held(lease: Lease) -> dict[Slot, Decimal]:
        return dict.fromkeys(slots_of(lease.scopes, lease.at_ms), lease.held)

    return _covering(leases, short, deaf, held)


def rate_unsettled(lease: Lease) -> dict[str, float]:
    """What of its slice of each bucket a rate lease may not have used: all of it less what
    its settled admissions took (the authority learns of the others only at the return)."""
    requests = float(max(lease.rate_requests - len(lease.settled), 0))
    tokens = float(max(lease.rate_tokens - lease.settled_tokens, 0))
    return {name: requests if is_rps(name) else tokens for name in lease.rate_buckets}


def rate_to_recall(leases: Iterable[Lease], short: dict[str, float], deaf: set[str]) -> tuple[str, ...]:
    """The leases to recall so that a request refused for a rate limit may pass: every lease
    that may hold an unused slice of a bucket (by name) the request is `short` of (requests
    for an RPS bucket, its TPM estimate for a TPM one), when together they may hold at least
    that much of every such bucket (`_covering`). A return gives back only what its router did
    not admit, so the request may be refused after all: never more is admitted than the bucket
    and its leases hold (buckets.py)."""
    return _covering(leases, short, deaf, rate_unsettled)


@dataclass
class Parked(Generic[T]):
    """A request denied at a cap or a rate limit, waiting for recalled leases: decided again at
    `until_ms` at the latest."""

    item: T
    lease_ids: tuple[str, ...]
    until_ms: int


class Waiting(Generic[T]):
    """The requests waiting for recalled leases, oldest first. `due` hands back those to decide
    again: all their leases are back (or no longer waited for), or their wait is over."""

    def __init__(self) -> None:
        self.parked: list[Parked[T]] = []

    def park(self, item: T, lease_ids: tuple[str, ...], until_ms: int) -> None:
        self.parked.append(Parked(item, lease_ids, until_ms))

    def due(self, awaiting: Callable[[tuple[str, ...]], bool], now_ms: int) -> list[Parked[T]]:
        out, keep = [], []
        for parked in self.parked:
            if parked.until_ms <= now_ms or not awaiting(parked.lease_ids):
                out.append(parked)
            else:
                keep.append(parked)
        self.parked = keep
        return out

    def next_due_ms(self, awaited_until: Callable[[tuple[str, ...]], int]) -> int | None:
        """When the soonest parked request is due if no lease comes back meanwhile: its own
        wait's end, or the moment its leases stop being waited for (`awaited_until`)."""
        return min((min(p.until_ms, awaited_until(p.lease_ids) + 1) for p in self.parked), default=None)

    def take_all(self) -> list[Parked[T]]:
        out, self.parked = self.parked, []
        return out
