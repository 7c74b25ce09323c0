"""Budget leases on rate-limited scopes: the bucket arithmetic (lent tokens, refill under what the
leases hold, repayment of what they did not use), the authority's grants, returns and expiry, the
router's admission by requests and TPM estimate, settlement's TPM correction, takeover, and the
rate limit's bound with two routers admitting from leases. Pure: time is passed in
(services/budget/buckets.py, escrow.py, authority.py; services/router/escrow.py;
docs/budgets.md, "Leases on rate-limited scopes")."""

from __future__ import annotations

import random
from decimal import Decimal

from services.budget.authority import Authority, lease_record
from services.budget.buckets import TokenBucket
from services.budget.escrow import RATE_RETURN_GRACE_MS, RATE_WINDOW_MS, LeasePolicy, rate_units
from services.router.escrow import Escrow, RouterLease
from switchyard.tenancy import Limits, Project, TenancyView, issue_key, key_kv_key, project_kv_key
from switchyard.v1 import budget_pb2, events_pb2, invoke_pb2

NOW = 1_794_000_000_000
UNIT = Decimal("0.001")
POLICY = LeasePolicy(ttl_ms=2000, share=0.25, max_requests=64, min_requests=4, request_timeout_ms=120_000)
GRACE = 10_000


def _view(project: Limits | None = None, key: Limits | None = None) -> tuple[TenancyView, str]:
    view = TenancyView()
    view.apply(project_kv_key("acme"), Project(id="acme", limits=project or Limits()).to_bytes())
    record, _ = issue_key("acme", limits=key or Limits())
    view.apply(key_kv_key(record.id), record.to_bytes())
    return view, record.id


def _lease_ask(key_id: str, tokens: int = 100, router: str = "r1") -> budget_pb2.LeaseAsk:
    return budget_pb2.LeaseAsk(
        router_id=router, project_id="acme", key_id=key_id, unit_usd=str(UNIT), want=True,
        tokens_per_request=tokens,
    )  # fmt: skip


def _ask(request_id: str, key_id: str, tokens: int = 100, at_ms: int = NOW) -> budget_pb2.AuthorizeRequest:
    return budget_pb2.AuthorizeRequest(
        request_id=request_id, project_id="acme", key_id=key_id, max_cost_usd=str(UNIT),
        estimated_tokens=tokens, received_unix_ms=at_ms, deadline_unix_ms=at_ms + 60_000,
    )  # fmt: skip


def _done(
    request_id: str, key_id: str, tokens: int, lease_id: str = "", lease_tokens: int = 0
) -> events_pb2.Completion:
    return events_pb2.Completion(
        request_id=request_id, project_id="acme", key_id=key_id, cost_usd=str(UNIT),
        status=invoke_pb2.STATUS_OK, started_unix_ms=NOW, lease_id=lease_id,
        lease_held_usd=str(UNIT) if lease_id else "", lease_tokens=lease_tokens,
        usage=invoke_pb2.Usage(prompt_tokens=tokens, completion_tokens=0),
    )  # fmt: skip


def _bucket(authority: Authority, name: str) -> TokenBucket:
    return authority.buckets[name]


# --- the bucket ---------------------------------------------------------------------------


def test_a_bucket_refills_only_up_to_what_its_leases_leave() -> None:
    bucket = TokenBucket.full(10.0, 10.0, 0.0)
    bucket.lend(4, 0.0)
    assert (bucket.tokens, bucket.lent) == (6, 4)
    bucket.take(6, 0.0)
    bucket.refill(5.0)  # five seconds at 10/s: full again, but only to capacity less what is lent
    assert bucket.tokens == 6 and bucket.lent == 4
    bucket.repay(4, unused=3, now_s=5.0)  # the lease admitted one: three come back
    assert (bucket.tokens, bucket.lent) == (9, 0)
    bucket.refill(6.0)
    assert bucket.tokens == 10
    bucket.lend(2, 6.0)
    bucket.adjust(-50, 6.0)  # a refund never lifts it over what the lease leaves either
    assert bucket.tokens == 8
    bucket.repay(2, unused=0, now_s=6.0)  # a lease never given back: all of it counts as used
    assert (bucket.tokens, bucket.lent) == (8, 0)


def test_the_bucket_and_its_leases_together_never_admit_more_than_the_limit() -> None:
    """Random per-request takes, lends, admissions from leases and repayments over time: in every
    interval the admissions are at most one capacity plus the rate times its length."""
    for seed in range(30):
        rng = random.Random(seed)
        rate, capacity = 20.0, 20.0
        bucket = TokenBucket.full(rate, capacity, 0.0)
        leases: list[list[float]] = []  # [lent, admitted]
        admitted: list[float] = []
        now = 0.0
        for _ in range(600):
            now += rng.random() * 0.03
            op = rng.random()
            if op < 0.4 and bucket.wait_s(1, now) == 0:
                bucket.take(1, now)
                admitted.append(now)
            elif op < 0.55:
                size = int(0.25 * bucket.lendable(now))
                if size:
                    bucket.lend(size, now)
                    leases.append([size, 0])
            elif op < 0.85 and leases:
                lease = rng.choice(leases)
                if lease[1] < lease[0]:
                    lease[1] += 1
                    admitted.append(now)
            elif leases:
                lease = leases.pop(rng.randrange(len(leases)))
                unused = lease[0] - lease[1] if rng.random() < 0.7 else 0  # else: expired unreturned
                bucket.repay(lease[0], unused, now)
            assert bucket.tokens + bucket.lent <= capacity + 1e-9
        for i, start in enumerate(admitted):
            for j in range(i, len(admitted)):
                assert j - i + 1 <= capacity + rate * (admitted[j] - start) + 1e-6, seed


def test_a_lease_is_a_share_of_what_the_buckets_hold_and_none_near_empty() -> None:
    assert rate_units(64, [40.0], [], 0, 0.25, 4) == 10  # a quarter of one second's 40 requests
    assert rate_units(64, [40.0, 100.0], [], 0, 0.25, 4) == 10  # the key's and the project's
    assert rate_units(64, [40.0], [6000.0], 300, 0.25, 4) == 5  # a quarter of the tokens, in requests
    assert rate_units(64, [15.0], [], 0, 0.25, 4) == 0  # under 4: per request
    assert rate_units(64, [-3.0], [], 0, 0.25, 4) == 0  # in debt
    assert rate_units(8, [400.0], [], 0, 0.25, 4) == 8  # the cap's sizing is smaller


# --- the authority ------------------------------------------------------------------------


def test_a_grant_lends_from_each_bucket_and_a_return_repays_what_it_did_not_use() -> None:
    view, key = _view(key=Limits(rps=40, tpm=60_000))
    authority = Authority(view)
    lease, grant = authority.grant_lease("l1", "r1", _lease_ask(key, tokens=300), NOW, POLICY)
    assert lease is not None
    # A quarter of 40 requests; a quarter of 60 000 tokens is 50 requests of 300: 10 it is.
    assert grant.requests == 10 and grant.ttl_ms == RATE_WINDOW_MS  # a second, not the 2 s TTL
    assert grant.rate_limited and grant.tokens == 3000
    rps, tpm = _bucket(authority, f"rps|key:{key}"), _bucket(authority, f"tpm|key:{key}")
    assert (rps.tokens, rps.lent, tpm.tokens, tpm.lent) == (30, 10, 57_000, 3000)
    returned = budget_pb2.LeaseReturn(lease_id="l1")
    for i in range(3):
        returned.admissions.add(
            request_id=f"a{i}", held_usd=str(UNIT), deadline_unix_ms=NOW + 1000, tokens=300
        )
    assert authority.give_back(returned, NOW)
    assert (rps.tokens, rps.lent, tpm.tokens, tpm.lent) == (37, 0, 59_100, 0)
    assert not authority.give_back(returned, NOW)  # twice: nothing more comes back
    assert (rps.tokens, tpm.tokens) == (37, 59_100)
    # The three still open became reservations holding their estimates: settlement corrects.
    assert {r.tokens for r in authority.book.reservations.values()} == {300}
    authority.settle(_done("a0", key, 500, "l1"), NOW)
    assert tpm.tokens == 59_100 - 200


def test_a_lease_never_returned_counts_as_used_until_its_router_can_no_longer_admit() -> None:
    view, key = _view(key=Limits(rps=40))
    authority = Authority(view)
    lease, _ = authority.grant_lease("l1", "r1", _lease_ask(key), NOW, POLICY)
    assert lease is not None and lease.rate_until_ms == NOW + RATE_WINDOW_MS + RATE_RETURN_GRACE_MS
    rps = _bucket(authority, f"rps|key:{key}")
    authority.expire(lease.rate_until_ms, GRACE)
    assert rps.lent == 10  # its router might still admit: still out
    later = lease.rate_until_ms + 1
    authority.expire(later, GRACE)
    assert rps.lent == 0 and "l1" not in authority.rate_leases and "l1" in authority.leases
    assert rps.tokens == 30  # never repaid: the ten count as admitted (the refill brings them back)
    returned = budget_pb2.LeaseReturn(lease_id="l1")  # a late return, admitting none, adds nothing
    assert authority.give_back(returned, later)
    assert rps.tokens == 30


def test_leases_shrink_as_the_bucket_empties_and_stop_near_it() -> None:
    # Each grant is a quarter of what the bucket still holds; per-request admissions take from
    # what is left; below four requests' worth no lease: all of it per request, to the last one.
    view, key = _view(key=Limits(rps=40))
    authority = Authority(view)
    sizes = []
    for n in range(10):
        lease, _ = authority.grant_lease(f"l{n}", "r1", _lease_ask(key), NOW, POLICY)
        if lease is None:
            break
        sizes.append(lease.rate_requests)
    assert sizes == [10, 7, 5, 4]  # 40, 30, 23, 18 held; 14 left, a quarter of it is under 4
    allowed = sum(authority.authorize(_ask(f"q{i}", key), NOW).allow for i in range(30))
    assert allowed == 40 - sum(sizes)  # leases and requests together: exactly one second's worth
    denied = authority.authorize(_ask("late", key), NOW)
    assert not denied.allow and denied.code == "rate_limited" and denied.retry_after_s > 0


def test_a_scope_near_its_rate_limit_is_decided_per_request() -> None:
    view, key = _view(key=Limits(rps=40))
    authority = Authority(view)
    allowed = sum(authority.authorize(_ask(f"q{i}", key), NOW).allow for i in range(25))
    assert allowed == 25
    lease, grant = authority.grant_lease("l1", "r1", _lease_ask(key), NOW, POLICY)
    assert lease is None and "rate limit" in grant.reason  # 15 left: a quarter is under 4
    # An older router that does not send its TPM estimate gets no lease on a TPM-limited scope.
    view, key = _view(project=Limits(tpm=60_000))
    lease, grant = Authority(view).grant_lease("l1", "r1", _lease_ask(key, tokens=0), NOW, POLICY)
    assert lease is None and "rate limits" in grant.reason


def test_settlement_corrects_a_lease_admissions_tpm_estimate_once() -> None:
    view, key = _view(project=Limits(tpm=60_000))
    authority = Authority(view)
    authority.grant_lease("l1", "r1", _lease_ask(key, tokens=100), NOW, POLICY)
    tpm = _bucket(authority, "tpm|project:acme")
    before = tpm.tokens
    authority.settle(_done("a1", key, 400, "l1", lease_tokens=100), NOW)  # used 300 more than estimated
    assert tpm.tokens == before - 300
    authority.settle(_done("a1", key, 400, "l1", lease_tokens=100), NOW)  # a duplicate: nothing
    assert tpm.tokens == before - 300
    authority.settle(_done("a2", key, 40, "l1", lease_tokens=100), NOW)  # used less: refunded
    assert tpm.tokens == before - 240


def test_a_successor_holds_the_journaled_slices_until_their_router_stops() -> None:
    view, key = _view(key=Limits(rps=40))
    leader = Authority(view)
    lease, _ = leader.grant_lease("l1", "r1", _lease_ask(key), NOW, POLICY)
    assert lease is not None
    record = lease_record(lease)
    assert (record.rate_requests, record.rate_until_unix_ms) == (10, lease.rate_until_ms)
    successor = Authority(view)
    successor.restore_lease(record, NOW + 500, GRACE)
    rps = _bucket(successor, f"rps|key:{key}")
    assert (rps.tokens, rps.lent) == (30, 10)  # its buckets start full, less what the router holds
    late = Authority(view)
    late.restore_lease(record, lease.rate_until_ms + 1, GRACE)  # its router can admit no more
    assert f"rps|key:{key}" not in late.buckets or late.buckets[f"rps|key:{key}"].lent == 0


# --- the router ---------------------------------------------------------------------------


def _grant(requests: int = 4, tokens: int = 400, ttl_ms: float = 1000) -> budget_pb2.LeaseGrant:
    return budget_pb2.LeaseGrant(
        lease_id="l1", amount_usd=str(requests * UNIT), requests=requests, ttl_ms=ttl_ms,
        hold_until_unix_ms=NOW + 121_000, at_unix_ms=NOW, capped=False, rate_limited=True, tokens=tokens,
    )  # fmt: skip


def test_a_router_admits_while_the_lease_has_a_request_and_the_estimate_left() -> None:
    escrow = Escrow()
    scope = ("acme", "", "k")
    escrow.add(scope, _grant(requests=4, tokens=400), now=0.0)
    ok = NOW + 60_000
    assert escrow.admit(scope, "a", UNIT, ok, NOW, 0.1, tokens=250) is not None
    assert escrow.admit(scope, "b", UNIT, ok, NOW, 0.1, tokens=200) is None  # 150 tokens left
    assert escrow.wants_renewal(scope, 0.1)  # under half its tokens left
    assert escrow.admit(scope, "c", UNIT, ok, NOW, 0.1, tokens=150) is not None
    escrow.close(scope, 0.1, UNIT, tokens=1)
    (returned,) = escrow.take_returns()
    assert [(a.request_id, a.tokens) for a in returned.admissions] == [("a", 250), ("c", 150)]


def test_a_routers_admit_window_starts_when_it_sent_the_ask() -> None:
    # The grant took 0.3 s to arrive: the window still ends a second after the ask was sent,
    # never after the authority's own count of it.
    lease = RouterLease.of(_grant(), now=10.3, sent=10.0)
    assert lease.open(10.99) and not lease.open(11.0)
    # A lease with no rate limit starts on arrival: its whole window, however slow the answer.
    spend = budget_pb2.LeaseGrant(lease_id="s1", amount_usd="0.004", requests=4, ttl_ms=2000)
    assert RouterLease.of(spend, now=10.3, sent=10.0).admit_until == 12.3


# --- two routers, one authority ------------------------------------------------------------


def test_two_routers_with_leases_never_pass_the_rate_limit() -> None:
    """Two routers take requests at random times, admitting from leases when they can, asking
    per request (with a lease) when not, renewing, returning, and sometimes dying with leases
    out: in every interval the admissions are at most one second's allowance plus the rate
    times its length (docs/budgets.md, "Rate limits"), and far more are offered."""
    rps = 40
    for seed in range(20):
        rng = random.Random(seed)
        view, key = _view(key=Limits(rps=rps))
        authority = Authority(view)
        routers = {"r1": Escrow(), "r2": Escrow()}
        scope = ("acme", "", key)
        admitted: list[float] = []
        by_lease = offered = 0
        t = 0.0
        for n in range(1500):
            # Three seconds at ~25 a second (under the limit), then ~330 a second (8x the limit).
            t += rng.random() * (0.08 if t < 3 else 0.006)
            now_ms = NOW + int(t * 1000)
            if t < 3:
                offered += 1
            name = rng.choice(list(routers))
            escrow = routers[name]
            request_id = f"{name}.{n}"
            if escrow.admit(scope, request_id, UNIT, now_ms + 60_000, now_ms, t) is not None:
                admitted.append(t)
                by_lease += t < 3
                if escrow.wants_renewal(scope, t) and rng.random() < 0.5:
                    _, grant = authority.grant_lease(f"g{n}", name, _lease_ask(key), now_ms, POLICY)
                    escrow.add(scope, grant, t, sent=t)
                continue
            escrow.close(scope, t, UNIT)
            if rng.random() < 0.05:  # this router dies: its leases are never given back
                routers[name] = escrow = Escrow()
            for returned in escrow.take_returns():
                authority.give_back(returned, now_ms)
            if authority.authorize(_ask(request_id, key, at_ms=now_ms), now_ms).allow:
                admitted.append(t)
                _, grant = authority.grant_lease(f"g{n}", name, _lease_ask(key), now_ms, POLICY)
                escrow.add(scope, grant, t, sent=t)
            if rng.random() < 0.1:
                authority.expire(now_ms, GRACE)
        under = sum(a < 3 for a in admitted)
        assert under >= 0.9 * offered, (seed, under, offered)  # under the limit: (nearly) all served
        assert by_lease >= 0.6 * under, (seed, by_lease, under)  # mostly from leases, no round trip
        assert len(admitted) < 1500 / 2, seed
        for i, start in enumerate(admitted):
            for j in range(i, len(admitted)):
                assert j - i + 1 <= rps + rps * (admitted[j] - start) + 1e-6, (seed, i, j)
