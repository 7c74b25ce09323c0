"""The budget authority's decisions: reserve or deny, settle, expire, report. Pure.

One `Authority` object is the only place spend and rate-limit state changes; main.py feeds it
requests and events one at a time on one event loop, so every decision sees every earlier one
(no lost update under any concurrency inside the process). Across processes, only the
elected leader holds an Authority (docs/budgets.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from switchyard import units
from switchyard.errors import ErrorCode
from switchyard.pricing import format_usd
from switchyard.tenancy import Limits, TenancyView, budget_project, scope_label
from switchyard.v1 import budget_pb2, events_pb2

from . import escrow
from .alerts import Crossing, RefusalMemory, crossed, reached, refusal
from .book import ZERO, Change, Reservation, Slot, SpendBook
from .buckets import TokenBucket
from .escrow import Admission, Lease, LeasePolicy
from .periods import period_start
from .quotas import QuotaBook, QuotaNeed

# A request's own clock is trusted for its period only within this distance of ours.
MAX_CLOCK_SKEW_MS = 60_000


@dataclass(frozen=True)
class Verdict:
    allow: bool
    code: str = ""  # budget_exceeded | rate_limited
    reason: str = ""
    retry_after_s: float = 0.0
    scope: str = ""
    cap_usd: str = ""
    reservation: Reservation | None = None  # set when a new hold was made (journal it)
    deployment_id: str = ""  # the candidate reserved on
    at_quota: tuple[str, ...] = ()  # candidates ranked above it that were at their provider quota
    held_usd: str = ""  # the amount held against a cap ("" when no budget applies)
    alert: Crossing | None = None  # a budget refused for the first time in its period: alert
    # Denied at a cap, or for a rate limit, while these leases may hold enough unused room (or
    # unused slices of the short buckets) that their return may let it in: recall them and
    # decide again (escrow.to_recall, escrow.rate_to_recall). Not final: no alert counted yet.
    recall: tuple[str, ...] = ()

    def to_proto(self, request_id: str) -> budget_pb2.Decision:
        return budget_pb2.Decision(
            allow=self.allow,
            deny_code=self.code,
            deny_reason=self.reason,
            retry_after_ms=units.ms(self.retry_after_s),
            reservation_id=request_id if self.allow else "",
            scope=self.scope,
            cap_usd=self.cap_usd,
            deployment_id=self.deployment_id,
            at_quota=self.at_quota,
            held_usd=self.held_usd,
        )


def candidates_of(ask: budget_pb2.AuthorizeRequest) -> list[budget_pb2.QuotaCandidate]:
    """The router's ranked chain; an ask without one names its deployment only."""
    if ask.candidates:
        return list(ask.candidates)
    return [
        budget_pb2.QuotaCandidate(
            deployment_id=ask.deployment_id, max_cost_usd=ask.max_cost_usd, input_tokens=ask.estimated_tokens
        )
    ]


def quota_need(candidate: budget_pb2.QuotaCandidate) -> QuotaNeed:
    return QuotaNeed(candidate.deployment_id, candidate.input_tokens, candidate.output_tokens)


def _amount(text: str) -> Decimal:
    try:
        value = Decimal(text or "0")
    except InvalidOperation:
        return Decimal(0)
    return value if value.is_finite() and value > 0 else Decimal(0)


def _per(value: float) -> str:
    return f"{value:g}"


class Authority:
    def __init__(
        self, view: TenancyView, book: SpendBook | None = None, quotas: QuotaBook | None = None
    ) -> None:
        self.view = view
        self.book = book if book is not None else SpendBook()
        self.buckets: dict[str, TokenBucket] = {}
        self.quotas = quotas if quotas is not None else QuotaBook()
        self.refusals = RefusalMemory()
        self.leases: dict[str, Lease] = {}  # budget leases out at routers (escrow.py)
        self.rate_leases: dict[str, Lease] = {}  # those still holding a slice of rate-limit buckets
        # Leases recalled at a cap (escrow.to_recall), with until when their return is awaited:
        # one still out after that (a dead router) is not waited for, nor recalled, again.
        self.recalled: dict[str, int] = {}

    # --- authorize ----------------------------------------------------------------------

    def reservation_of(
        self,
        ask: budget_pb2.AuthorizeRequest,
        now_ms: int,
        candidate: budget_pb2.QuotaCandidate | None = None,
    ) -> Reservation:
        at_ms = ask.received_unix_ms
        if not at_ms or abs(at_ms - now_ms) > MAX_CLOCK_SKEW_MS:
            at_ms = now_ms
        return Reservation(
            request_id=ask.request_id,
            scopes=tuple(self.view.scopes(ask.project_id, ask.agent_id, ask.key_id)),
            amount=_amount(candidate.max_cost_usd if candidate else ask.max_cost_usd),
            at_ms=at_ms,
            deadline_ms=ask.deadline_unix_ms or now_ms + 120_000,
            tokens=ask.estimated_tokens,
            project_id=ask.project_id,
            key_id=ask.key_id,
            deployment_id=candidate.deployment_id if candidate else ask.deployment_id,
        )

    def authorize(self, ask: budget_pb2.AuthorizeRequest, now_ms: int) -> Verdict:
        """Pick the first candidate with provider-quota headroom and reserve the request's
        maximum cost on it in every scope at once, or deny."""
        held = self.book.reservations.get(ask.request_id)
        if held is not None or self.book.is_settled(ask.request_id):
            # A repeated ask (the router retried): same answer, no new hold.
            if held is None:
                return Verdict(True)
            return Verdict(True, deployment_id=held.deployment_id, held_usd=self._capped(held))
        now_s = now_ms / 1000
        if self.rate_leases:
            self._release_rates(now_ms)
        candidates = candidates_of(ask)
        index, skipped = self.quotas.choose([quota_need(c) for c in candidates], now_s)
        at_quota = tuple(deployment_id for deployment_id, _ in skipped)
        if index is None:
            self.quotas.refuse(list(at_quota))
            return self._at_quota(skipped)
        candidate = candidates[index]
        reservation = self.reservation_of(ask, now_ms, candidate)
        denial = self._over_cap(reservation, now_ms) or self._rate_limited(reservation, now_ms)
        if denial is not None:
            return denial
        self._take_tokens(reservation, now_s)
        self.quotas.refuse(list(at_quota))
        self.quotas.take(ask.request_id, quota_need(candidate), now_s)
        self.book.hold(reservation)
        return Verdict(
            True,
            reservation=reservation,
            deployment_id=candidate.deployment_id,
            at_quota=at_quota,
            held_usd=self._capped(reservation),
        )

    def _capped(self, reservation: Reservation) -> str:
        """The hold as the stream limit when a budget applies to the request, else ""."""
        if not self.view.budgets_for(list(reservation.scopes)):
            return ""
        return format_usd(reservation.amount)

    def _at_quota(self, skipped: list[tuple[str, float]]) -> Verdict:
        """Every candidate is at its provider quota: retry when the soonest one frees up."""
        finite = [(wait, deployment_id) for deployment_id, wait in skipped if not math.isinf(wait)]
        detail = ", ".join(
            f"{deployment_id} "
            + ("never fits this request" if math.isinf(wait) else f"frees up in {wait:.1f} s")
            for deployment_id, wait in skipped
        )
        if not finite:
            return Verdict(
                False,
                ErrorCode.RATE_LIMITED,
                f"rate limited: this request is larger than every candidate's provider quota ({detail})",
                60.0,
                scope=f"deployment:{skipped[0][0]}" if skipped else "",
            )
        wait, soonest = min(finite)
        return Verdict(
            False,
            ErrorCode.RATE_LIMITED,
            f"rate limited: every candidate deployment is at its provider quota ({detail})",
            round(max(wait, 0.001), 3),
            scope=f"deployment:{soonest}",
        )

    def _over_cap(self, reservation: Reservation, now_ms: int) -> Verdict | None:
        over = []
        for budget in self.view.budgets_for(list(reservation.scopes)):
            slot = (budget.scope_label, budget.period, period_start(budget.period, reservation.at_ms))
            counter = self.book.counter(slot)
            need = counter.spent + counter.held + reservation.amount - budget.cap_usd
            if need > 0:
                over.append((budget, slot, counter, need))
        if not over:
            return None
        recall: tuple[str, ...] = ()
        if self.leases:  # their unused rest may be what is missing: recall rather than refuse
            short: dict[Slot, Decimal] = {slot: need for _, slot, _, need in over}
            recall = escrow.to_recall(self.leases.values(), short, self._deaf(now_ms))
        budget, slot, counter, _ = over[0]
        cap = format_usd(budget.cap_usd)
        alert = refusal(budget, slot[2], counter.spent, counter.held, reservation.amount)
        return Verdict(
            False,
            ErrorCode.BUDGET_EXCEEDED,
            f"budget exceeded: {budget.scope_label} has a {budget.period} cap of {cap} USD "
            f"({slot[2]}); spent {format_usd(counter.spent)}, reserved "
            f"{format_usd(counter.held)}, this request may cost up to "
            f"{format_usd(reservation.amount)}",
            scope=budget.scope_label,
            cap_usd=cap,
            alert=alert if not recall and self.refusals.first(alert) else None,
            recall=recall,
        )

    def _limits(self, reservation: Reservation) -> list[tuple[str, Limits]]:
        out = []
        if reservation.key_id:
            out.append((scope_label("key", reservation.key_id), self.view.key_limits(reservation.key_id)))
        out.append(
            (scope_label("project", reservation.project_id), self.view.project_limits(reservation.project_id))
        )
        return out

    def _bucket(self, name: str, rate_per_s: float, capacity: float, now_s: float) -> TokenBucket:
        bucket = self.buckets.get(name)
        if bucket is None:
            bucket = self.buckets[name] = TokenBucket.full(rate_per_s, capacity, now_s)
        elif bucket.rate_per_s != rate_per_s or bucket.capacity != capacity:
            bucket.reconfigure(rate_per_s, capacity, now_s)  # limits changed live
        return bucket

    def _needs(self, reservation: Reservation, now_s: float) -> list[tuple[str, TokenBucket, float, str]]:
        """(bucket name, bucket, what the request takes from it, the limit in words)."""
        needs = []
        for scope, limits in self._limits(reservation):
            if limits.rps:
                name = f"rps|{scope}"
                bucket = self._bucket(name, limits.rps, max(limits.rps, 1.0), now_s)
                needs.append((name, bucket, 1.0, f"{scope} allows {_per(limits.rps)} requests per second"))
            if limits.tpm:
                name = f"tpm|{scope}"
                bucket = self._bucket(name, limits.tpm / 60.0, float(limits.tpm), now_s)
                needs.append(
                    (
                        name,
                        bucket,
                        float(reservation.tokens),
                        f"{scope} allows {limits.tpm} tokens per minute "
                        f"(this request counts ~{reservation.tokens})",
                    )
                )
        return needs

    def _rate_limited(self, reservation: Reservation, now_ms: int) -> Verdict | None:
        now_s = now_ms / 1000
        blocked = []
        for name, bucket, amount, why in self._needs(reservation, now_s):
            wait = bucket.wait_s(amount, now_s)
            if wait > 0:
                blocked.append((wait, why, name, amount - bucket.tokens))
        if not blocked:
            return None
        wait, why, _, _ = max(blocked)
        if math.isinf(wait):
            return Verdict(
                False,
                ErrorCode.RATE_LIMITED,
                f"rate limited: this request is larger than the limit: {why}",
                60.0,
            )
        recall: tuple[str, ...] = ()
        if self.rate_leases:  # their unused slices may be what is missing: recall, not refuse
            short = {name: lacking for _, _, name, lacking in blocked}
            recall = escrow.rate_to_recall(self.rate_leases.values(), short, self._deaf(now_ms))
        return Verdict(
            False, ErrorCode.RATE_LIMITED, f"rate limited: {why}", round(max(wait, 0.001), 3), recall=recall
        )

    def _take_tokens(self, reservation: Reservation, now_s: float) -> None:
        for _, bucket, amount, _ in self._needs(reservation, now_s):
            bucket.take(amount, now_s)

    def restore(self, ask: budget_pb2.AuthorizeRequest, now_ms: int) -> None:
        """Hold a reservation the previous authority granted (from its journal), unchecked."""
        if not self.book.is_settled(ask.request_id):
            chosen = [c for c in ask.candidates if c.deployment_id == ask.deployment_id]
            candidate = chosen[0] if chosen else None
            self.book.hold(self.reservation_of(ask, int(ask.received_unix_ms) or now_ms, candidate))
            if candidate is not None:
                self.quotas.take(ask.request_id, quota_need(candidate), now_ms / 1000)

    def cancel(self, request_id: str) -> None:
        """Undo a reservation that could not be journaled (the request is refused)."""
        self.book.release(request_id)
        self.quotas.release(request_id)

    # --- settle -------------------------------------------------------------------------

    def settle(self, event: events_pb2.Completion, now_ms: int) -> list[Crossing]:
        """Count a completed request's actual cost once; return the alert thresholds crossed."""
        scopes = self.view.scopes(event.project_id, event.agent_id, event.key_id)
        lease = self.leases.get(event.lease_id) if event.lease_id else None
        if (
            lease is not None
            and event.request_id not in self.book.reservations
            and not self.book.is_settled(event.request_id)
        ):  # admitted from a lease still out: its hold leaves the lease
            escrow.settle(
                self.book, lease, event.request_id, _amount(event.lease_held_usd), event.lease_tokens
            )
        result = self.book.settle(
            event.request_id,
            scopes,
            event.started_unix_ms or now_ms,
            _amount(event.cost_usd),
            now_ms,
        )
        if result is None:
            return []
        reservation, changes = result
        self.quotas.settle(
            event.request_id,
            event.deployment_id,
            event.usage.prompt_tokens,
            event.usage.completion_tokens,
            now_ms / 1000,
        )
        actual = event.usage.prompt_tokens + event.usage.completion_tokens
        if reservation is not None and reservation.tokens:
            self._settle_tokens(reservation, actual - reservation.tokens, now_ms / 1000)
        elif reservation is None and event.lease_id and event.lease_tokens:
            # Admitted from a rate-limited lease: its estimate was taken from the lease's tokens.
            admitted = Reservation(
                event.request_id,
                tuple(scopes),
                ZERO,
                now_ms,
                now_ms,
                project_id=event.project_id,
                key_id=event.key_id,
            )
            self._settle_tokens(admitted, actual - event.lease_tokens, now_ms / 1000)
        return self._crossings(changes)

    def _settle_tokens(self, reservation: Reservation, delta: int, now_s: float) -> None:
        for scope, limits in self._limits(reservation):
            bucket = self.buckets.get(f"tpm|{scope}")
            if limits.tpm and bucket is not None:
                bucket.adjust(delta, now_s)

    def _crossings(self, changes: list[Change]) -> list[Crossing]:
        out = []
        for budget in self.view.budgets_for(list({c.slot[0] for c in changes})):
            for change in changes:
                scope, period, start = change.slot
                if scope == budget.scope_label and period == budget.period:
                    for pct in crossed(budget.thresholds, budget.cap_usd, change.before, change.after):
                        out.append(Crossing(budget, start, pct, change.after))
        return out

    def all_reached(self, now_ms: int) -> list[Crossing]:
        """Every threshold reached in the current periods (checked after a rebuild)."""
        out: list[Crossing] = []
        for budget in self.view.budgets.values():
            start = period_start(budget.period, now_ms)
            spent = self.book.counter((budget.scope_label, budget.period, start)).spent
            out.extend(
                Crossing(budget, start, pct, spent)
                for pct in reached(budget.thresholds, budget.cap_usd, spent)
            )
        return out

    def expire(self, now_ms: int, grace_ms: int) -> list[Reservation]:
        expired = self.book.expired(now_ms, grace_ms)
        for reservation in expired:
            self.quotas.release(reservation.request_id)
        for lease in escrow.expired(self.book, self.leases, now_ms, grace_ms):
            self._repay(lease, 0, 0, now_ms)
        for lease_id in [i for i in self.recalled if i not in self.leases]:
            del self.recalled[lease_id]
        self._release_rates(now_ms)
        return expired

    # --- leases (escrow.py) ------------------------------------------------------------

    def recall(self, lease_ids: tuple[str, ...], now_ms: int, wait_ms: int) -> list[str]:
        """Mark these leases recalled (their return awaited until now + `wait_ms`); the ones
        not recalled before, whose routers must be told (budget.lease.revoke)."""
        fresh = [i for i in lease_ids if i in self.leases and i not in self.recalled]
        for lease_id in fresh:
            self.recalled[lease_id] = now_ms + wait_ms
        return fresh

    def awaiting(self, lease_ids: tuple[str, ...], now_ms: int) -> bool:
        """Whether any of these recalled leases is still out and still waited for."""
        return any(i in self.leases and self.recalled.get(i, -1) >= now_ms for i in lease_ids)

    def awaited_until(self, lease_ids: tuple[str, ...]) -> int:
        """Until when a return of these recalled leases is waited for (0: none is)."""
        return max((self.recalled.get(i, 0) for i in lease_ids if i in self.leases), default=0)

    def _deaf(self, now_ms: int) -> set[str]:
        """Recalled leases not given back in time (their router is dead or cut off)."""
        return {i for i, until in self.recalled.items() if until < now_ms}

    def _recalling(self, scopes: tuple[str, ...], now_ms: int) -> bool:
        """Whether a recall is under way on any of these scopes (they are at a cap or a rate
        limit)."""
        for lease_id, until in self.recalled.items():
            lease = self.leases.get(lease_id)
            if lease is not None and until >= now_ms and not set(lease.scopes).isdisjoint(scopes):
                return True
        return False

    def headroom(self, scopes: tuple[str, ...], at_ms: int) -> Decimal | None:
        """What is left under the tightest cap on these scopes now (None: no cap applies)."""
        left: Decimal | None = None
        for budget in self.view.budgets_for(list(scopes)):
            counter = self.book.counter(
                (budget.scope_label, budget.period, period_start(budget.period, at_ms))
            )
            room = budget.cap_usd - counter.spent - counter.held
            left = room if left is None else min(left, room)
        return left

    def grant_lease(
        self,
        lease_id: str,
        router_id: str,
        ask: budget_pb2.LeaseAsk,
        now_ms: int,
        policy: LeasePolicy,
    ) -> tuple[Lease | None, budget_pb2.LeaseGrant]:
        """A lease on a slice of the scopes' headroom (and of their rate-limit buckets) for
        `router_id`, held at once, or none (the grant says why): scopes near a cap or a rate
        limit are decided per request."""
        scopes = tuple(self.view.scopes(ask.project_id, ask.agent_id, ask.key_id))
        now_s = now_ms / 1000
        if self.rate_leases:
            self._release_rates(now_ms)
        probe = Reservation(
            "",
            scopes,
            ZERO,
            now_ms,
            now_ms,
            tokens=ask.tokens_per_request,
            project_id=ask.project_id,
            key_id=ask.key_id,
        )
        buckets = self._rate_buckets(probe, now_s)
        tpm = [name for name in buckets if not escrow.is_rps(name)]
        if tpm and not ask.tokens_per_request:
            # A router that does not size by tokens (an older one) cannot keep a TPM slice.
            return None, budget_pb2.LeaseGrant(reason="rate limits apply: decided per request")
        window = escrow.admit_window_ms(now_ms, policy.ttl_ms)
        if buckets:
            window = min(window, escrow.RATE_WINDOW_MS)
        if window < escrow.MIN_WINDOW_MS:
            return None, budget_pb2.LeaseGrant(reason="the budget day is ending")
        if self.recalled and self._recalling(scopes, now_ms):
            # Requests wait for recalled leases here: what comes back is theirs, not a new lease's.
            return None, budget_pb2.LeaseGrant(reason="leases recalled: decided per request")
        unit = _amount(ask.unit_usd)
        units = escrow.lease_units(
            unit, self.headroom(scopes, now_ms), policy.share, policy.max_requests, policy.min_requests
        )
        if not units:
            return None, budget_pb2.LeaseGrant(reason="near a cap: decided per request")
        if buckets:
            units = escrow.rate_units(
                units,
                [bucket.lendable(now_s) for name, bucket in buckets.items() if escrow.is_rps(name)],
                [buckets[name].lendable(now_s) for name in tpm],
                ask.tokens_per_request,
                policy.share,
                policy.min_requests,
            )
            if not units:
                return None, budget_pb2.LeaseGrant(reason="near a rate limit: decided per request")
        amount = unit * units
        lease = Lease(
            lease_id=lease_id,
            router_id=router_id,
            scopes=scopes,
            project_id=ask.project_id,
            agent_id=ask.agent_id,
            key_id=ask.key_id,
            amount=amount,
            held=amount,
            at_ms=now_ms,
            hold_until_ms=now_ms + window + policy.request_timeout_ms,
        )
        escrow.grant(self.book, lease)
        self.leases[lease_id] = lease
        if buckets:
            self._lend(
                lease,
                buckets,
                units,
                units * ask.tokens_per_request if tpm else 0,
                now_ms + window + escrow.RATE_RETURN_GRACE_MS,
                now_ms,
            )
        return lease, budget_pb2.LeaseGrant(
            lease_id=lease_id,
            amount_usd=format_usd(amount),
            requests=units,
            ttl_ms=window,
            hold_until_unix_ms=lease.hold_until_ms,
            at_unix_ms=now_ms,
            capped=bool(self.view.budgets_for(list(scopes))),
            rate_limited=bool(buckets),
            tokens=lease.rate_tokens,
        )

    def _rate_buckets(self, probe: Reservation, now_s: float) -> dict[str, TokenBucket]:
        """The rate-limit buckets of the probe's scopes, by name (the RPS and TPM ones)."""
        out = {}
        for scope, limits in self._limits(probe):
            if limits.rps:
                name = f"rps|{scope}"
                out[name] = self._bucket(name, limits.rps, max(limits.rps, 1.0), now_s)
            if limits.tpm:
                name = f"tpm|{scope}"
                out[name] = self._bucket(name, limits.tpm / 60.0, float(limits.tpm), now_s)
        return out

    def _lend(
        self,
        lease: Lease,
        buckets: dict[str, TokenBucket],
        requests: int,
        tokens: int,
        until_ms: int,
        now_ms: int,
    ) -> None:
        """The lease takes its slice of each bucket (buckets.py: lent, not refilled over)."""
        now_s = now_ms / 1000
        for name, bucket in buckets.items():
            bucket.lend(float(requests if escrow.is_rps(name) else tokens), now_s)
        lease.rate_requests = requests
        lease.rate_tokens = tokens
        lease.rate_buckets = tuple(buckets)
        lease.rate_until_ms = until_ms
        self.rate_leases[lease.lease_id] = lease

    def _repay(self, lease: Lease, unused_requests: int, unused_tokens: int, now_ms: int) -> None:
        """The lease's slice leaves the buckets' lent count; what it did not use comes back."""
        if self.rate_leases.pop(lease.lease_id, None) is None:
            return
        now_s = now_ms / 1000
        for name in lease.rate_buckets:
            bucket = self.buckets.get(name)
            if bucket is None:
                continue
            if escrow.is_rps(name):
                bucket.repay(float(lease.rate_requests), float(unused_requests), now_s)
            else:
                bucket.repay(float(lease.rate_tokens), float(unused_tokens), now_s)

    def _release_rates(self, now_ms: int) -> None:
        """Slices whose lease was not given back in time count as used (their router may have
        admitted that many; it can admit no more now)."""
        for lease in [lease for lease in self.rate_leases.values() if lease.rate_until_ms < now_ms]:
            self._repay(lease, 0, 0, now_ms)

    def cancel_lease(self, lease_id: str) -> None:
        """Undo a grant that could not be journaled (the router gets no lease)."""
        lease = self.leases.pop(lease_id, None)
        self.recalled.pop(lease_id, None)
        if lease is not None:
            escrow.give_back(self.book, lease, [])
            self._repay(lease, lease.rate_requests, lease.rate_tokens, lease.at_ms)

    def give_back(self, returned: budget_pb2.LeaseReturn, now_ms: int = 0) -> bool:
        """A router returned a lease: its open admissions stay held, the rest is released (and
        what it did not use of its rate-limit slices goes back to the buckets). False when the
        lease is not out (already returned, or expired)."""
        lease = self.leases.pop(returned.lease_id, None)
        self.recalled.pop(returned.lease_id, None)
        if lease is None:
            return False
        admissions = [
            Admission(a.request_id, _amount(a.held_usd), a.deadline_unix_ms, a.tokens)
            for a in returned.admissions
        ]
        escrow.give_back(self.book, lease, admissions)
        self._repay(lease, *escrow.rate_unused(lease, admissions), now_ms)
        return True

    def restore_lease(self, record: budget_pb2.LeaseRecord, now_ms: int, grace_ms: int) -> None:
        """Hold a lease the previous authority granted (from its journal), unchecked."""
        if record.lease_id in self.leases or record.hold_until_unix_ms + grace_ms < now_ms:
            return
        amount = _amount(record.amount_usd)
        lease = Lease(
            lease_id=record.lease_id,
            router_id=record.router_id,
            scopes=tuple(self.view.scopes(record.project_id, record.agent_id, record.key_id)),
            project_id=record.project_id,
            agent_id=record.agent_id,
            key_id=record.key_id,
            amount=amount,
            held=amount,
            at_ms=record.at_unix_ms,
            hold_until_ms=record.hold_until_unix_ms,
        )
        escrow.grant(self.book, lease)
        self.leases[lease.lease_id] = lease
        if record.rate_until_unix_ms > now_ms:  # its router may still admit from its slices
            probe = Reservation(
                "", lease.scopes, ZERO, now_ms, now_ms, project_id=lease.project_id, key_id=lease.key_id
            )
            buckets = self._rate_buckets(probe, now_ms / 1000)
            if buckets:
                self._lend(
                    lease,
                    buckets,
                    record.rate_requests,
                    record.rate_tokens,
                    record.rate_until_unix_ms,
                    now_ms,
                )

    # --- report -------------------------------------------------------------------------

    def _scope_project(self, scope: str) -> str:
        kind, _, scope_id = scope.partition(":")
        if kind == "key":
            key = self.view.keys.get(scope_id)
            return key.project_id if key else ""
        return scope_id.split("/")[0]

    def status(self, project_id: str, now_ms: int) -> dict[str, Any]:
        """Spend, reservations and caps of one project's scopes (all projects if "")."""
        starts = {p: period_start(p, now_ms) for p in ("day", "month", "total")}
        scopes: dict[str, dict[str, Any]] = {}

        def entry(scope: str) -> dict[str, Any]:
            if scope not in scopes:
                periods = {}
                for period, start in starts.items():
                    counter = self.book.counter((scope, period, start))
                    periods[period] = {
                        "start": start,
                        "spent_usd": format_usd(counter.spent),
                        "reserved_usd": format_usd(counter.held),
                    }
                scopes[scope] = {"scope": scope, "periods": periods, "budgets": []}
            return scopes[scope]

        for scope, _, start in list(self.book.counters):
            if (not project_id or self._scope_project(scope) == project_id) and start in starts.values():
                entry(scope)
        for budget in self.view.budgets.values():
            if project_id and budget_project(budget, self.view) != project_id:
                continue
            counter = self.book.counter((budget.scope_label, budget.period, starts[budget.period]))
            pct = counter.spent / budget.cap_usd * 100
            entry(budget.scope_label)["budgets"].append(
                {
                    "period": budget.period,
                    "cap_usd": format_usd(budget.cap_usd),
                    "spent_usd": format_usd(counter.spent),
                    "reserved_usd": format_usd(counter.held),
                    "remaining_usd": format_usd(
                        max(budget.cap_usd - counter.spent - counter.held, Decimal(0))
                    ),
                    "used_pct": float(round(pct, 2)),
                    "thresholds": budget.thresholds,
                }
            )
        return {
            "project": project_id,
            "reservations": len(self.book.reservations),
            "leases": len(self.leases),
            "scopes": sorted(scopes.values(), key=lambda s: s["scope"]),
        }


def lease_record(lease: Lease) -> budget_pb2.LeaseRecord:
    """What the journal keeps of a grant: enough for a successor to hold it again."""
    return budget_pb2.LeaseRecord(
        lease_id=lease.lease_id,
        router_id=lease.router_id,
        project_id=lease.project_id,
        agent_id=lease.agent_id,
        key_id=lease.key_id,
        amount_usd=format_usd(lease.amount),
        at_unix_ms=lease.at_ms,
        hold_until_unix_ms=lease.hold_until_ms,
        rate_requests=lease.rate_requests,
        rate_tokens=lease.rate_tokens,
        rate_until_unix_ms=lease.rate_until_ms,
    )
