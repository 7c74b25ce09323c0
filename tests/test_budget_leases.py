"""Budget leases (escrow): sizing, admission from a lease, settlement against it, returns,
expiry, takeover. Pure: time is passed in (services/budget/escrow.py, services/router/escrow.py)."""

from __future__ import annotations

import random
from decimal import Decimal

from services.budget.authority import Authority, lease_record
from services.budget.escrow import DAY_MS, LeasePolicy, admit_window_ms, lease_units
from services.budget.periods import period_start
from services.budget.snapshot import JournalEntry, decode, encode, restore, settle_all, take
from services.router.escrow import Escrow, RouterLease
from switchyard.tenancy import (
    Budget,
    Limits,
    Project,
    TenancyView,
    budget_kv_key,
    issue_key,
    key_kv_key,
    project_kv_key,
)
from switchyard.v1 import budget_pb2, events_pb2, invoke_pb2

NOW = 1_794_000_000_000
UNIT = Decimal("0.001")
POLICY = LeasePolicy(ttl_ms=2000, share=0.25, max_requests=64, min_requests=4, request_timeout_ms=120_000)
GRACE = 10_000
DAY = ("project:acme", "day", period_start("day", NOW))


def _view(cap: str | None = "0.05", **project_limits: float) -> tuple[TenancyView, str]:
    view = TenancyView()
    view.apply(project_kv_key("acme"), Project(id="acme", limits=Limits(**project_limits)).to_bytes())
    record, _ = issue_key("acme")
    view.apply(key_kv_key(record.id), record.to_bytes())
    if cap is not None:
        budget = Budget(
            scope="project", scope_id="acme", period="day", cap_usd=Decimal(cap), project_id="acme"
        )
        view.apply(budget_kv_key("project", "acme", "day"), budget.to_bytes())
    return view, record.id


def _lease_ask(key_id: str, unit: Decimal = UNIT, router: str = "r1") -> budget_pb2.LeaseAsk:
    return budget_pb2.LeaseAsk(
        router_id=router, project_id="acme", key_id=key_id, unit_usd=str(unit), want=True
    )


def _ask(i: int, key_id: str, cost: Decimal = UNIT) -> budget_pb2.AuthorizeRequest:
    return budget_pb2.AuthorizeRequest(
        request_id=f"req_{i}", project_id="acme", key_id=key_id, max_cost_usd=str(cost),
        received_unix_ms=NOW, deadline_unix_ms=NOW + 120_000,
    )  # fmt: skip


def _done(
    i: int, key_id: str, cost: Decimal, lease_id: str = "", held: Decimal = UNIT
) -> events_pb2.Completion:
    return events_pb2.Completion(
        request_id=f"req_{i}", project_id="acme", key_id=key_id, cost_usd=str(cost), status=invoke_pb2.STATUS_OK,
        started_unix_ms=NOW, lease_id=lease_id, lease_held_usd=str(held) if lease_id else "",
    )  # fmt: skip


def _counter(authority: Authority) -> tuple[Decimal, Decimal]:
    counter = authority.book.counter(DAY)
    return counter.spent, counter.held


# --- sizing ------------------------------------------------------------------------------


def test_lease_size_shrinks_with_the_headroom_and_stops_near_the_cap() -> None:
    assert lease_units(UNIT, Decimal("1"), 0.25, 64, 4) == 64  # far from the cap: the most
    assert lease_units(UNIT, Decimal("0.1"), 0.25, 64, 4) == 25  # a quarter of what is left
    assert lease_units(UNIT, Decimal("0.016"), 0.25, 64, 4) == 4
    assert lease_units(UNIT, Decimal("0.0159"), 0.25, 64, 4) == 0  # below the threshold: per request
    assert lease_units(UNIT, Decimal("-1"), 0.25, 64, 4) == 0  # already over (a cap lowered)
    assert lease_units(UNIT, None, 0.25, 64, 4) == 64  # no cap applies
    assert lease_units(Decimal(0), Decimal("0.001"), 0.25, 64, 4) == 64  # free requests


def test_the_admit_window_ends_with_the_utc_day() -> None:
    midnight = (NOW // DAY_MS + 1) * DAY_MS
    assert admit_window_ms(NOW, 2000) == 2000
    assert admit_window_ms(midnight - 500, 2000) == 500


# --- the authority's side ----------------------------------------------------------------


def test_leases_and_holds_never_pass_the_cap_and_stop_near_it() -> None:
    view, key = _view("0.05")  # 50 requests of UNIT
    authority = Authority(view)
    granted = []
    for i in range(40):
        lease, grant = authority.grant_lease(f"l{i}", "r1", _lease_ask(key), NOW, POLICY)
        if lease is None:
            assert grant.reason and not grant.lease_id
            break
        granted.append(Decimal(grant.amount_usd))
        assert grant.capped and grant.hold_until_unix_ms == NOW + 2000 + 120_000
        spent, held = _counter(authority)
        assert spent + held <= Decimal("0.05")
    # Each lease a quarter of what was left, in whole requests, until fewer than 4 would fit.
    assert granted[:3] == [Decimal("0.012"), Decimal("0.009"), Decimal("0.007")]
    assert all(a >= 4 * UNIT for a in granted)
    left = Decimal("0.05") - sum(granted)
    assert left < 16 * UNIT  # what is left is decided per request, exactly
    allowed = sum(authority.authorize(_ask(100 + i, key), NOW).allow for i in range(40))
    assert allowed == int(left / UNIT)


def test_a_small_rate_limit_gets_no_lease() -> None:
    # A quarter of 5 requests per second is under the 4-request threshold: decided per request
    # (larger limits lease a slice of their buckets: tests/test_rate_leases.py).
    view, key = _view("1", rps=5)
    lease, grant = Authority(view).grant_lease("l1", "r1", _lease_ask(key), NOW, POLICY)
    assert lease is None and "rate limit" in grant.reason


def test_settling_an_admission_replaces_its_hold_with_its_actual_cost() -> None:
    view, key = _view("0.05")
    authority = Authority(view)
    lease, _ = authority.grant_lease("l1", "r1", _lease_ask(key), NOW, POLICY)
    assert lease is not None and _counter(authority) == (0, Decimal("0.012"))
    authority.settle(_done(1, key, Decimal("0.0004"), "l1"), NOW)
    assert _counter(authority) == (Decimal("0.0004"), Decimal("0.011"))
    authority.settle(_done(1, key, Decimal("0.0004"), "l1"), NOW)  # a duplicate counts nothing
    assert _counter(authority) == (Decimal("0.0004"), Decimal("0.011"))


def test_a_return_keeps_open_admissions_held_and_frees_the_rest() -> None:
    view, key = _view("0.05")
    authority = Authority(view)
    authority.grant_lease("l1", "r1", _lease_ask(key), NOW, POLICY)
    authority.settle(_done(1, key, Decimal("0.0004"), "l1"), NOW)  # settled before the return
    returned = budget_pb2.LeaseReturn(lease_id="l1")
    for i in (1, 2, 3):
        returned.admissions.add(request_id=f"req_{i}", held_usd=str(UNIT), deadline_unix_ms=NOW + 1000)
    assert authority.give_back(returned)
    assert not authority.give_back(returned)  # returned twice: the second changes nothing
    assert "l1" not in authority.leases and set(authority.book.reservations) == {"req_2", "req_3"}
    assert _counter(authority) == (Decimal("0.0004"), 2 * UNIT)
    authority.settle(_done(2, key, Decimal("0.0002"), "l1"), NOW)  # after the return: a reservation
    assert _counter(authority) == (Decimal("0.0006"), UNIT)
    authority.expire(NOW + 1000 + GRACE + 1, GRACE)  # req_3 never completed: released like any hold
    assert _counter(authority) == (Decimal("0.0006"), 0)


def test_a_dead_routers_lease_expires_only_when_all_it_admitted_is_past_its_deadline() -> None:
    view, key = _view("0.05")
    authority = Authority(view)
    lease, _ = authority.grant_lease("l1", "r1", _lease_ask(key), NOW, POLICY)
    assert lease is not None
    authority.settle(_done(1, key, UNIT, "l1"), NOW)
    authority.expire(lease.hold_until_ms + GRACE, GRACE)
    assert "l1" in authority.leases and _counter(authority) == (UNIT, Decimal("0.011"))
    authority.expire(lease.hold_until_ms + GRACE + 1, GRACE)
    assert not authority.leases and _counter(authority) == (UNIT, 0)
    authority.settle(_done(2, key, UNIT, "l1"), NOW)  # a late completion still counts its cost
    assert _counter(authority) == (2 * UNIT, 0)


# --- the router's side -------------------------------------------------------------------


def _grant(lease_id: str = "l1", amount: Decimal = 4 * UNIT, requests: int = 4) -> budget_pb2.LeaseGrant:
    return budget_pb2.LeaseGrant(
        lease_id=lease_id, amount_usd=str(amount), requests=requests, ttl_ms=2000,
        hold_until_unix_ms=NOW + 122_000, at_unix_ms=NOW, capped=True,
    )  # fmt: skip


def test_a_router_admits_from_its_lease_only_what_fits() -> None:
    escrow = Escrow()
    key = ("acme", "", "k")
    escrow.add(key, _grant(), now=0.0)
    ok = NOW + 60_000
    assert escrow.admit(key, "a", UNIT, NOW + 200_000, NOW, 0.1) is None  # deadline past the hold
    assert escrow.admit(key, "a", UNIT, ok, NOW + DAY_MS, 0.1) is None  # received another UTC day
    assert escrow.admit(key, "a", 5 * UNIT, ok, NOW, 0.1) is None  # larger than what is left
    assert escrow.admit(key, "a", UNIT, ok, NOW, 2.0) is None  # the admit window has ended
    assert escrow.admit(("other", "", "k"), "a", UNIT, ok, NOW, 0.1) is None  # another scope
    taken = [escrow.admit(key, f"r{i}", UNIT, ok, NOW, 0.1) for i in range(5)]
    assert [t is not None for t in taken] == [True, True, True, True, False]
    assert escrow.wants_renewal(key, 0.1)
    escrow.close(key, 0.1, UNIT)  # cannot admit another: given back with the next ask
    (returned,) = escrow.take_returns()
    assert returned.lease_id == "l1" and [a.request_id for a in returned.admissions] == [
        "r0",
        "r1",
        "r2",
        "r3",
    ]
    assert not escrow.leases and not escrow.take_returns()


def test_a_router_renews_before_its_lease_runs_dry_or_ends() -> None:
    escrow = Escrow()
    key = ("acme", "", "k")
    escrow.add(key, _grant(amount=10 * UNIT, requests=10), now=0.0)
    for i in range(5):
        assert not escrow.wants_renewal(key, 0.1)
        escrow.admit(key, f"r{i}", UNIT, NOW + 1000, NOW, 0.1)
    assert escrow.wants_renewal(key, 0.1)  # half used
    fresh = Escrow()
    fresh.add(key, _grant(amount=10 * UNIT, requests=10), now=0.0)
    assert fresh.wants_renewal(key, 1.1)  # more than half its window gone
    fresh.close_expired(2.5)
    assert [r.lease_id for r in fresh.take_returns()] == ["l1"]
    assert RouterLease.of(_grant(), 0.0).remaining == 4 * UNIT


# --- takeover ----------------------------------------------------------------------------


def test_a_successor_honours_leases_from_the_snapshot_and_the_journal() -> None:
    view, key = _view("0.05")
    leader = Authority(view)
    first, _ = leader.grant_lease("l1", "r1", _lease_ask(key), NOW, POLICY)  # journal 1
    leader.settle(_done(1, key, UNIT, "l1"), NOW)
    snapshot = decode(encode(take(leader.book, 10, 1, NOW, tuple(leader.leases.values()))))
    second, _ = leader.grant_lease("l2", "r2", _lease_ask(key), NOW, POLICY)  # journal 2, after the copy
    assert first is not None and second is not None
    returned = budget_pb2.LeaseReturn(lease_id="l1")
    returned.admissions.add(request_id="req_1", held_usd=str(UNIT), deadline_unix_ms=NOW + 1000)
    returned.admissions.add(request_id="req_9", held_usd=str(UNIT), deadline_unix_ms=NOW + 1000)
    leader.give_back(returned)  # journal 3
    journal = [
        JournalEntry(1, lease=lease_record(first)),
        JournalEntry(2, lease=lease_record(second)),
        JournalEntry(3, returned=returned),
    ]
    successor = restore(view, snapshot, journal, NOW, GRACE)
    settle_all(successor, [_done(2, key, UNIT, "l2")], NOW)  # an event after the copy
    leader.settle(_done(2, key, UNIT, "l2"), NOW)
    assert _counter(successor) == _counter(leader)
    assert set(successor.leases) == {"l2"} and set(successor.book.reservations) == {"req_9"}


# --- the whole loop: two routers, one authority, a cap ------------------------------------


def test_two_routers_admitting_from_leases_spend_exactly_up_to_the_cap() -> None:
    """Demand above the cap from two routers with leases, renewals and returns interleaved at
    random: never more held and spent than the cap, and exactly as many served as fit."""
    for seed in range(20):
        rng = random.Random(seed)
        view, key = _view("0.05")
        authority = Authority(view)
        routers = {"r1": Escrow(), "r2": Escrow()}
        scope = ("acme", "", key)
        served, open_ids = 0, []
        for n in range(1, 401):
            name = rng.choice(list(routers))
            escrow = routers[name]
            request_id = f"req_{n}"
            now = 0.0
            lease = escrow.admit(scope, request_id, UNIT, NOW + 60_000, NOW, now)
            if lease is None:
                escrow.close(scope, now, UNIT)
                for returned in escrow.take_returns():
                    authority.give_back(returned)
                ask = _ask(n, key)
                verdict = authority.authorize(ask, NOW)
                if verdict.allow:
                    served += 1
                    open_ids.append((request_id, ""))
                    _, grant = authority.grant_lease(f"{name}.{n}", name, _lease_ask(key), NOW, POLICY)
                    escrow.add(scope, grant, now)
            else:
                served += 1
                open_ids.append((request_id, lease.lease_id))
            if open_ids and rng.random() < 0.3:  # a request completes at its hold
                request_id, lease_id = open_ids.pop(rng.randrange(len(open_ids)))
                event = _done(int(request_id[4:]), key, UNIT, lease_id)
                authority.settle(event, NOW)
            spent, held = _counter(authority)
            assert spent + held <= Decimal("0.05"), seed
        assert served == 50, seed


def test_a_cap_or_limit_change_revokes_the_leases_of_its_scopes() -> None:
    from services.budget.escrow import touched

    view, key = _view(None)
    authority = Authority(view)
    authority.grant_lease("l1", "r1", _lease_ask(key), NOW, POLICY)  # no cap yet: the most
    other = budget_pb2.LeaseAsk(router_id="r2", project_id="other", unit_usd=str(UNIT), want=True)
    authority.grant_lease("l2", "r2", other, NOW, POLICY)
    cap = Budget(scope="project", scope_id="acme", period="day", cap_usd=Decimal("0.01"), project_id="acme")
    view.apply(budget_kv_key("project", "acme", "day"), cap.to_bytes())
    assert touched(authority.leases, budget_kv_key("project", "acme", "day"), view) == ["l1"]
    assert touched(authority.leases, f"key.{key}", view) == ["l1"]
    assert touched(authority.leases, "project.other", view) == ["l2"]
    view.apply(budget_kv_key("project", "acme", "day"), None)
    assert touched(authority.leases, budget_kv_key("project", "acme", "day"), view) == []  # removed
    escrow = Escrow()
    escrow.add(("acme", "", key), _grant("l1"), 0.0)
    assert escrow.revoke({"l1"}) and not escrow.leases
    assert [r.lease_id for r in escrow.take_returns()] == ["l1"]
    assert not escrow.revoke({"l1"})
