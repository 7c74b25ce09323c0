"""Recalling leases at a rate limit (docs/budgets.md, "Leases on rate-limited scopes"): a request
refused for an RPS or TPM bucket while leases may hold unused slices of that bucket recalls them
and waits for their return, as a request at a cap does, so one router's unused slice no longer
refuses another router's requests while the key is under its limit; the rate bound still holds.
Pure: time is passed in (services/budget/authority.py, escrow.py; services/router/escrow.py)."""

from __future__ import annotations

from typing import Any

from services.budget.authority import Authority, Verdict
from services.budget.escrow import rate_unsettled
from switchyard.errors import ErrorCode
from switchyard.tenancy import Limits, Project, TenancyView, issue_key, key_kv_key, project_kv_key
from switchyard.v1 import budget_pb2, events_pb2, invoke_pb2
from tests.support.lease_burst import GRACE, NOW, POLICY, UNIT, LeaseBurst

RPS = 40


def _view(key: Limits, other: Limits | None = None) -> tuple[TenancyView, str, str]:
    """Project acme with a key limited to `key`, and a second key of it (limited to `other`)."""
    view = TenancyView()
    view.apply(project_kv_key("acme"), Project(id="acme").to_bytes())
    record, _ = issue_key("acme", limits=key)
    view.apply(key_kv_key(record.id), record.to_bytes())
    second, _ = issue_key("acme", limits=other or Limits())
    view.apply(key_kv_key(second.id), second.to_bytes())
    return view, record.id, second.id


def _lease_ask(key_id: str, router: str = "r1", tokens: int = 100) -> budget_pb2.LeaseAsk:
    return budget_pb2.LeaseAsk(
        router_id=router, project_id="acme", key_id=key_id, unit_usd=str(UNIT), want=True,
        tokens_per_request=tokens,
    )  # fmt: skip


def _ask(
    request_id: str, key_id: str, tokens: int = 100, at_ms: int = NOW, lease_for: str = ""
) -> budget_pb2.AuthorizeRequest:
    return budget_pb2.AuthorizeRequest(
        request_id=request_id, project_id="acme", key_id=key_id, max_cost_usd=str(UNIT),
        estimated_tokens=tokens, received_unix_ms=at_ms, deadline_unix_ms=at_ms + 60_000,
        lease_for=lease_for,
    )  # fmt: skip


def _done(request_id: str, key_id: str, lease_id: str, tokens: int = 100) -> events_pb2.Completion:
    return events_pb2.Completion(
        request_id=request_id, project_id="acme", key_id=key_id, cost_usd=str(UNIT),
        status=invoke_pb2.STATUS_OK, started_unix_ms=NOW, lease_id=lease_id,
        lease_held_usd=str(UNIT), lease_tokens=tokens,
        usage=invoke_pb2.Usage(prompt_tokens=tokens, completion_tokens=0),
    )  # fmt: skip


def _drain(authority: Authority, key: str, tokens: int = 100) -> int:
    """Per-request asks until the key's buckets refuse one; how many were allowed."""
    n = 0
    while authority.authorize(_ask(f"q{n}", key, tokens), NOW).allow:
        n += 1
    return n


# --- the decision ------------------------------------------------------------------------


def test_a_rate_refusal_names_exactly_the_leases_holding_unused_slices_of_the_short_bucket() -> None:
    view, key, other = _view(Limits(rps=RPS), Limits(rps=RPS))
    authority = Authority(view)
    authority.grant_lease("l1", "r1", _lease_ask(key), NOW, POLICY)  # 10 of the key's 40
    authority.grant_lease("l2", "r2", _lease_ask(key, "r2"), NOW, POLICY)  # 7 of the 30 left
    authority.grant_lease("l3", "r2", _lease_ask(other, "r2"), NOW, POLICY)  # the other key's bucket
    assert _drain(authority, key) == 23

    refused = authority.authorize(_ask("late", key), NOW)
    assert not refused.allow and refused.code == ErrorCode.RATE_LIMITED
    assert refused.recall == ("l1", "l2")  # not l3: it lent nothing from this key's bucket
    assert refused.retry_after_s > 0  # what the router is told if the refusal stands

    # l1's ten admissions have all completed: it surely holds nothing unused any more.
    for i in range(10):
        authority.settle(_done(f"a{i}", key, "l1"), NOW)
    assert rate_unsettled(authority.leases["l1"]) == {f"rps|key:{key}": 0.0}
    assert authority.authorize(_ask("late", key), NOW).recall == ("l2",)

    # l2 comes back having admitted 3 of its 7: the waiting request gets one of the other 4.
    returned = budget_pb2.LeaseReturn(lease_id="l2")
    for i in range(3):
        returned.admissions.add(request_id=f"b{i}", held_usd=str(UNIT), deadline_unix_ms=NOW + 60_000)
    assert authority.give_back(returned, NOW)
    assert authority.authorize(_ask("late", key), NOW).allow
    assert sum(authority.authorize(_ask(f"more{i}", key), NOW).allow for i in range(10)) == 3
    refused = authority.authorize(_ask("last", key), NOW)
    assert not refused.allow and refused.recall == ()  # l1 is still out but holds nothing unused


def test_no_recall_when_no_lease_holds_what_the_refused_request_lacks() -> None:
    # No lease at all.
    view, key, _ = _view(Limits(rps=RPS))
    authority = Authority(view)
    assert _drain(authority, key) == RPS
    assert authority.authorize(_ask("late", key), NOW).recall == ()

    # TPM: a lease holds 15 000 tokens unused (a quarter of the minute's 60 000, 50 requests of
    # 300); a request lacking more than that is refused at once.
    view, key, _ = _view(Limits(tpm=60_000))
    authority = Authority(view)
    lease, _ = authority.grant_lease("l1", "r1", _lease_ask(key, tokens=300), NOW, POLICY)
    assert lease is not None and lease.rate_tokens == 15_000
    assert _drain(authority, key, tokens=5000) == 9  # the 45 000 left: the bucket is empty
    assert authority.authorize(_ask("fits", key, tokens=15_000), NOW).recall == ("l1",)
    assert authority.authorize(_ask("big", key, tokens=15_001), NOW).recall == ()
    # Two admissions settled took 600 of its tokens: it may hold 14 400 unused, no more.
    authority.settle(_done("a0", key, "l1", tokens=300), NOW)
    authority.settle(_done("a1", key, "l1", tokens=300), NOW)
    assert authority.authorize(_ask("fits", key, tokens=14_400), NOW).recall == ("l1",)
    assert authority.authorize(_ask("big", key, tokens=14_401), NOW).recall == ()
    # A request larger than a whole minute's allowance is never helped by a recall.
    assert authority.authorize(_ask("huge", key, tokens=60_001), NOW).recall == ()


def test_what_a_recalled_lease_admitted_stays_used_and_the_request_is_refused_after_all() -> None:
    view, key, _ = _view(Limits(rps=RPS))
    authority = Authority(view)
    authority.grant_lease("l1", "r1", _lease_ask(key), NOW, POLICY)
    _drain(authority, key)
    assert authority.authorize(_ask("late", key), NOW).recall == ("l1",)
    returned = budget_pb2.LeaseReturn(lease_id="l1")  # its router had admitted all ten
    for i in range(10):
        returned.admissions.add(request_id=f"a{i}", held_usd=str(UNIT), deadline_unix_ms=NOW + 60_000)
    assert authority.give_back(returned, NOW)
    refused = authority.authorize(_ask("late", key), NOW)
    assert not refused.allow and refused.recall == ()
    assert not authority.give_back(returned, NOW)  # returned again (idempotent): nothing comes back
    assert not authority.authorize(_ask("late", key), NOW).allow


def test_a_rate_recall_not_back_in_time_is_not_waited_for_again_and_blocks_grants_meanwhile() -> None:
    view, key, _ = _view(Limits(rps=RPS))
    authority = Authority(view)
    authority.grant_lease("l1", "r1", _lease_ask(key), NOW, POLICY)
    _drain(authority, key)
    wait_ms = 1000  # SWITCHYARD_BUDGET_TIMEOUT_S of 2 s
    assert authority.recall(authority.authorize(_ask("late", key), NOW).recall, NOW, wait_ms) == ["l1"]
    assert authority.recall(("l1",), NOW + 1, wait_ms) == []  # recalled once: not told again
    # While it is recalled, no new lease on the scope (20 requests' worth has refilled: enough
    # for one otherwise): what comes back goes to the waiting request.
    lease, grant = authority.grant_lease("l2", "r2", _lease_ask(key, "r2"), NOW + 500, POLICY)
    assert lease is None and "recalled" in grant.reason
    # Its router is dead: past the wait it is no longer waited for, and leases are granted again.
    later = NOW + wait_ms + 1
    assert authority.awaiting(("l1",), NOW + wait_ms) and not authority.awaiting(("l1",), later)
    lease, _ = authority.grant_lease("l2", "r2", _lease_ask(key, "r2"), later, POLICY)
    assert lease is not None and lease.rate_requests == 7  # a quarter of the 30 refilled
    assert sum(authority.authorize(_ask(f"r{i}", key, at_ms=later), later).allow for i in range(30)) == 23
    refused = authority.authorize(_ask("late2", key, at_ms=later), later)
    assert refused.recall == ("l2",)  # l1 may still hold ten unused, but it is not named again
    # Never given back, l1's slice counts as used once its router can no longer admit from it.
    rps = authority.buckets[f"rps|key:{key}"]
    authority.expire(NOW + 2501, GRACE)
    assert "l1" not in authority.rate_leases and rps.lent == 7


# --- a burst at the limit, two routers, every message interleaved at random -----------------


def _burst(seed: int, recall: bool = True, **options: Any) -> LeaseBurst:
    """The simulation (tests/support/lease_burst.py) against a key limited to RPS requests per
    second; with recalls, every refusal that recalls nothing is checked (`_nothing_unused_held`)."""
    view, key, _ = _view(Limits(rps=RPS))
    return LeaseBurst(
        Authority(view), key,
        lambda request_id, key_id, at_ms, lease_for: _ask(request_id, key_id, at_ms=at_ms, lease_for=lease_for),
        _lease_ask, seed, recall=recall, refused=_nothing_unused_held if recall else None, **options,
    )  # fmt: skip


def _nothing_unused_held(burst: LeaseBurst, verdict: Verdict) -> None:
    """A refusal that recalls nothing: no lease of a live router that is still waited for
    (not recalled, or recalled and not late) holds a slice its router has not used."""
    if verdict.recall:
        return
    deaf = {i for i, until in burst.authority.recalled.items() if until < burst.now}
    for lease in burst.authority.rate_leases.values():
        if burst.alive(lease.router_id) and lease.lease_id not in deaf:
            assert burst.used.get(lease.lease_id, 0) >= lease.rate_requests, (burst.seed, lease.lease_id)


def _check_the_bound(burst: LeaseBurst) -> None:
    """In any interval of length t, at most RPS + RPS * t admitted (docs/budgets.md)."""
    times = sorted(burst.admitted)
    for i, start in enumerate(times):
        for j in range(i, len(times)):
            assert j - i + 1 <= RPS + RPS * (times[j] - start) / 1000 + 1e-6, (burst.seed, i, j)


def test_a_burst_from_two_routers_admits_exactly_the_limit() -> None:
    """200 requests at once (time standing still) from two routers against a 40 rps key: never
    more than 40 admitted, and exactly 40: a refusal recalls the unused slices a router holds
    with no request for them, so none is refused while the key is under its limit."""
    recalled = 0
    for seed in range(30):
        burst = _burst(seed)
        burst.run([(200, 0)])
        assert not burst.waiting.parked and burst.authority.recalled == {}, seed
        assert len(burst.admitted) + burst.denied == 200, seed
        assert len(burst.admitted) == RPS, (seed, len(burst.admitted))
        recalled += burst.recalls > 0
    assert recalled  # some runs did recall (else this tests nothing)


def test_without_rate_recalls_a_burst_is_refused_below_the_limit() -> None:
    """The gap rate recalls close: a slice one router's lease holds with no request left for it
    refuses the other router's requests while the key is under its limit."""
    served = []
    for seed in range(30):
        burst = _burst(seed, recall=False)
        burst.run([(200, 0)])
        served.append(len(burst.admitted))
    assert max(served) <= RPS and min(served) < RPS, served


def test_over_time_the_rate_bound_holds_and_no_request_is_refused_while_leases_hold_its_slice() -> None:
    """Three seconds under the limit (~25 a second), a burst of 200 at once, three seconds near
    the limit (~70 a second), another burst; every message moves time up to 3 ms, so leases end
    at their routers and are counted as used at the authority, and in half the runs a router
    dies with leases out in the first burst. In every interval never more than the bound; under
    the limit every request served; and every refusal that recalls nothing comes while no live
    lease still waited for holds an unused slice (checked at each such refusal)."""
    recalled = lost = 0
    for seed in range(20):
        dead = "r2" if seed % 2 else ""
        burst = _burst(seed, step_ms=3, dead=dead, dies_after=100)
        burst.run([(75, 80), (200, 0), (100, 30), (200, 0)])
        _check_the_bound(burst)
        assert not burst.waiting.parked, seed
        assert {f"req_{n}" for n in range(1, 76)} <= burst.served, seed
        assert len(burst.admitted) >= 3 * RPS, seed
        recalled += burst.recalls > 0
        lost += bool(dead) and any(lease.router_id == "r2" for lease in burst.authority.leases.values())
    assert recalled and lost  # recalls happened, and dead routers did leave leases out
