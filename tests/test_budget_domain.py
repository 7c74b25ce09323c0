"""The budget authority's domain: token buckets, periods, the spend book, decisions,
settlement, expiry, alerts and the restart rebuild. Pure: time is passed in."""

from __future__ import annotations

import math
from decimal import Decimal

from services.budget.alerts import (
    REFUSING,
    Crossing,
    RefusalMemory,
    alert_event,
    alert_id,
    crossed,
    reached,
    refusal,
    retry_delays,
    webhook_body,
)
from services.budget.authority import Authority
from services.budget.book import SpendBook
from services.budget.buckets import TokenBucket
from services.budget.periods import day_start_ms, month_start_ms, period_start
from services.budget.rebuild import rebuild
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

NOW = 1_794_000_000_000  # 2026-11-06T... UTC
COST = Decimal("0.0000105")


def _view(
    cap: str | None = None, period: str = "day", scope: str = "project", **limits
) -> tuple[TenancyView, str]:
    view = TenancyView()
    view.apply(
        project_kv_key("acme"), Project(id="acme", limits=Limits(**limits.get("project", {}))).to_bytes()
    )
    record, _ = issue_key("acme", limits=Limits(**limits.get("key", {})))
    view.apply(key_kv_key(record.id), record.to_bytes())
    if cap is not None:
        scope_id = "acme" if scope == "project" else record.id
        budget = Budget(
            scope=scope, scope_id=scope_id, period=period, cap_usd=Decimal(cap), project_id="acme"
        )
        view.apply(budget_kv_key(scope, scope_id, period), budget.to_bytes())
    return view, record.id


def _ask(
    i: int, key_id: str, cost: Decimal = COST, tokens: int = 30, at: int = NOW
) -> budget_pb2.AuthorizeRequest:
    return budget_pb2.AuthorizeRequest(
        request_id=f"req_{i}", project_id="acme", key_id=key_id, max_cost_usd=str(cost),
        estimated_tokens=tokens, received_unix_ms=at, deadline_unix_ms=at + 120_000,
    )  # fmt: skip


def _completion(
    i: int, key_id: str, cost: Decimal = COST, at: int = NOW, tokens: int = 30
) -> events_pb2.Completion:
    return events_pb2.Completion(
        request_id=f"req_{i}", project_id="acme", key_id=key_id, cost_usd=str(cost), status=invoke_pb2.STATUS_OK,
        started_unix_ms=at, usage=invoke_pb2.Usage(prompt_tokens=tokens // 2, completion_tokens=tokens - tokens // 2),
    )  # fmt: skip


def test_token_bucket_refills_and_reports_the_wait() -> None:
    bucket = TokenBucket.full(rate_per_s=5, capacity=5, now_s=0)
    for _ in range(5):
        assert bucket.wait_s(1, 0) == 0
        bucket.take(1, 0)
    assert bucket.wait_s(1, 0) == 0.2
    assert bucket.wait_s(1, 0.2) == 0
    assert math.isinf(bucket.wait_s(6, 10))  # larger than the bucket: never
    bucket.adjust(3, 10)  # charged after the fact
    assert bucket.tokens == 2
    bucket.adjust(-100, 10)  # refunds never overfill
    assert bucket.tokens == 5
    bucket.reconfigure(1, 2, 10)
    assert bucket.tokens == 2


def test_periods_are_utc_days_months_and_all_time() -> None:
    at = 1_793_923_199_999  # 2026-11-05T23:59:59.999Z
    assert period_start("day", at) == "2026-11-05"
    assert period_start("day", at + 1) == "2026-11-06"
    assert period_start("month", at) == "2026-11"
    assert period_start("total", at) == "all"
    assert day_start_ms(at) == 1_793_836_800_000
    assert period_start("month", month_start_ms(at)) == "2026-11"
    assert period_start("month", month_start_ms(at) - 1) == "2026-10"


def test_a_burst_never_crosses_the_cap_and_is_not_short_of_it() -> None:
    view, key_id = _view(cap="0.0005")
    authority = Authority(view)
    verdicts = [authority.authorize(_ask(i, key_id), NOW) for i in range(200)]
    allowed = [v for v in verdicts if v.allow]
    assert len(allowed) == int(Decimal("0.0005") / COST)  # exactly as many as fit: 47
    denied = [v for v in verdicts if not v.allow]
    assert {v.code for v in denied} == {"budget_exceeded"}
    assert denied[0].scope == "project:acme" and denied[0].cap_usd == "0.0005"
    assert "project:acme" in denied[0].reason and "day cap of 0.0005 USD" in denied[0].reason


def test_a_reservation_is_atomic_across_scopes() -> None:
    view, key_id = _view(cap="0.00002", scope="key")  # the key's cap binds, the project has none
    authority = Authority(view)
    assert authority.authorize(_ask(1, key_id), NOW).allow
    denied = authority.authorize(_ask(2, key_id), NOW)
    assert denied.code == "budget_exceeded" and denied.scope == f"key:{key_id}"
    held = authority.book.counter(("project:acme", "day", period_start("day", NOW))).held
    assert held == COST  # the refused request holds nothing in any scope


def test_settlement_replaces_the_hold_with_the_actual_cost_once() -> None:
    view, key_id = _view(cap="0.001")
    authority = Authority(view)
    authority.authorize(_ask(1, key_id, cost=Decimal("0.0004")), NOW)
    slot = ("project:acme", "month", "2026-11")
    assert authority.book.counter(slot).held == Decimal("0.0004")
    authority.settle(_completion(1, key_id, cost=Decimal("0.0001")), NOW + 10)
    authority.settle(_completion(1, key_id, cost=Decimal("0.0001")), NOW + 20)  # a repeated event
    assert authority.book.counter(slot).held == 0
    assert authority.book.counter(slot).spent == Decimal("0.0001")
    assert authority.authorize(_ask(1, key_id), NOW + 30).reservation is None  # a late repeat ask


def test_unsettled_reservations_expire_after_deadline_and_grace() -> None:
    view, key_id = _view(cap="0.00002")
    authority = Authority(view)
    assert authority.authorize(_ask(1, key_id), NOW).allow
    assert not authority.authorize(_ask(2, key_id), NOW).allow
    assert authority.expire(NOW + 120_000 + 5_000, grace_ms=10_000) == []
    expired = authority.expire(NOW + 120_000 + 10_001, grace_ms=10_000)
    assert [r.request_id for r in expired] == ["req_1"]
    assert authority.authorize(_ask(3, key_id, at=NOW + 130_002), NOW + 130_002).allow


def test_requests_per_second_hold_per_key_with_retry_after() -> None:
    view, key_id = _view(key={"rps": 5})
    authority = Authority(view)
    verdicts = [authority.authorize(_ask(i, key_id), NOW) for i in range(20)]
    assert sum(v.allow for v in verdicts) == 5
    limited = verdicts[5]
    assert limited.code == "rate_limited" and f"key:{key_id} allows 5 requests per second" in limited.reason
    assert limited.retry_after_s == 0.2
    assert authority.authorize(_ask(99, key_id), NOW + 200).allow  # one token back after 0.2 s


def test_tokens_per_minute_per_project_settle_with_actual_usage() -> None:
    view, key_id = _view(project={"tpm": 100})
    authority = Authority(view)
    assert authority.authorize(_ask(1, key_id, tokens=60), NOW).allow
    limited = authority.authorize(_ask(2, key_id, tokens=60), NOW)
    assert limited.code == "rate_limited" and limited.retry_after_s == 12.0  # 20 tokens at 100/min
    authority.settle(_completion(1, key_id, tokens=20), NOW)  # it used 20 of the 60 counted
    assert authority.authorize(_ask(3, key_id, tokens=60), NOW).allow
    too_big = authority.authorize(_ask(4, key_id, tokens=101), NOW + 60_000)
    assert too_big.code == "rate_limited" and "larger than the limit" in too_big.reason


def test_budget_denial_wins_over_rate_limit_and_takes_no_tokens() -> None:
    view, key_id = _view(cap="0.00001", key={"rps": 1})
    authority = Authority(view)
    assert authority.authorize(_ask(1, key_id), NOW).code == "budget_exceeded"
    view.budgets.clear()
    assert authority.authorize(_ask(2, key_id), NOW).allow  # the rps token was still there


def test_thresholds_alert_once_each() -> None:
    assert crossed([50, 80, 100], Decimal(10), Decimal(4), Decimal(8)) == [50, 80]
    assert crossed([50, 80, 100], Decimal(10), Decimal(8), Decimal("8.5")) == []
    assert reached([50, 80, 100], Decimal(10), Decimal(9)) == [50, 80]
    assert reached([50], Decimal(10), Decimal(0)) == []
    view, key_id = _view(cap="0.00003")
    authority = Authority(view)
    crossings = []
    for i in range(3):
        authority.authorize(_ask(i, key_id), NOW)
        crossings += authority.settle(_completion(i, key_id), NOW)
    assert [(c.budget.scope_label, c.threshold_pct) for c in crossings] == [
        ("project:acme", 50), ("project:acme", 80), ("project:acme", 100),
    ]  # fmt: skip
    ids = {alert_id(c) for c in crossings}
    assert len(ids) == 3 and all(i.startswith("alert.project.acme.day.") for i in ids)
    raised = Crossing(
        crossings[0].budget.model_copy(update={"cap_usd": Decimal(1)}), crossings[0].period_start, 50, COST
    )
    assert alert_id(raised) not in ids  # a new cap alerts afresh
    assert retry_delays(4, 0.5) == [0.5, 1.0, 2.0]


def test_the_first_refusal_of_a_period_alerts_once_with_spend_cap_and_reservation() -> None:
    view, key_id = _view(cap="0.00003")  # admits two requests of COST, refuses a third and fourth
    authority = Authority(view)
    verdicts = [authority.authorize(_ask(i, key_id, cost=COST * Decimal("1.2")), NOW) for i in range(4)]
    assert [v.allow for v in verdicts] == [True, True, False, False]
    assert verdicts[0].alert is None and verdicts[1].alert is None
    alert = verdicts[2].alert
    assert alert is not None and verdicts[3].alert is None  # refused again: no second alert
    assert alert.kind == REFUSING and alert.budget.scope_label == "project:acme"
    # Refused at 0 % settled spend: the holds and this reservation no longer fit, no threshold says so.
    assert (alert.spent, alert.reserved, alert.refused) == (0, COST * Decimal("2.4"), COST * Decimal("1.2"))
    event = alert_event(alert, NOW)
    assert (event.kind, event.spent_usd, event.cap_usd) == (REFUSING, "0", "0.00003")
    assert (event.reserved_usd, event.refused_usd) == ("0.0000252", "0.0000126")
    body = webhook_body(event, alert_id(alert))
    assert body["kind"] == "refusing" and body["id"].endswith(".0_00003.refusing")
    assert body["message"].startswith("cap reached: requests are being refused: project:acme")
    assert "0.0000126" in body["message"] and body["refused_usd"] == "0.0000126"
    threshold = webhook_body(alert_event(Crossing(alert.budget, alert.period_start, 50, COST), NOW), "x")
    assert threshold["kind"] == "threshold" and "refused_usd" not in threshold
    # A threshold alert's id is unchanged by kinds (marks already in the KV bucket still match).
    assert alert_id(Crossing(alert.budget, alert.period_start, 50, COST)).endswith(".0_00003.50")


def test_refusals_alert_afresh_per_period_and_cap_only() -> None:
    view, _ = _view(cap="1")
    budget = next(iter(view.budgets.values()))
    memory = RefusalMemory()
    first = refusal(budget, "2026-11-06", Decimal(1), Decimal(0), Decimal("0.1"))
    assert memory.first(first)
    assert not memory.first(refusal(budget, "2026-11-06", Decimal("0.9"), Decimal("0.1"), Decimal(2)))
    assert memory.first(refusal(budget, "2026-11-07", Decimal(1), Decimal(0), Decimal("0.1")))  # next day
    raised = budget.model_copy(update={"cap_usd": Decimal(2)})
    assert memory.first(refusal(raised, "2026-11-07", Decimal(2), Decimal(0), Decimal("0.1")))  # a new cap
    assert alert_id(first) != alert_id(refusal(raised, "2026-11-06", Decimal(1), Decimal(0), Decimal(1)))


def test_rebuild_counts_ledger_tail_and_journal_once() -> None:
    view, key_id = _view(cap="1")
    day = period_start("day", NOW)
    ledger_rows = [
        # Everything the ledger holds except the tail's ids; two were inserted after the tail
        # was read, so their events will also reach the live consumer: they must be ignored.
        {"project_id": "acme", "agent_id": "", "key_id": key_id, "total": "0.5", "month": "0.3",
         "day": "0.1", "recent": ["req_late1", "req_late2"]},
    ]  # fmt: skip
    tail = [_completion(1, key_id, cost=Decimal("0.01")), _completion(1, key_id, cost=Decimal("0.01"))]
    journal = [
        _ask(1, key_id, cost=Decimal("0.2")),  # settled in the tail
        _ask(2, key_id, cost=Decimal("0.2")),  # completed, in the ledger ("done")
        _ask(3, key_id, cost=Decimal("0.2")),  # still in flight: held again
        _ask(4, key_id, cost=Decimal("0.2"), at=NOW - 300_000),  # past deadline + grace
        _ask(3, key_id, cost=Decimal("0.2")),  # journaled twice
    ]
    authority = rebuild(view, ledger_rows, tail, journal, {"req_2"}, NOW, grace_ms=10_000)
    book = authority.book
    assert book.counter(("project:acme", "day", day)).spent == Decimal("0.11")
    assert book.counter((f"key:{key_id}", "month", "2026-11")).spent == Decimal("0.31")
    assert book.counter(("project:acme", "total", "all")).spent == Decimal("0.51")
    assert list(book.reservations) == ["req_3"]
    assert book.counter(("project:acme", "day", day)).held == Decimal("0.2")
    # The live consumer then sees events already counted: none counts again.
    for request_id in ("req_late1", "req_1"):
        authority.settle(events_pb2.Completion(request_id=request_id, project_id="acme", cost_usd="5"), NOW)
    authority.settle(_completion(3, key_id, cost=Decimal("0.05")), NOW)
    assert book.counter(("project:acme", "day", day)).spent == Decimal("0.16")
    assert book.counter(("project:acme", "day", day)).held == 0


def test_old_periods_are_pruned_but_held_ones_kept() -> None:
    book = SpendBook()
    book.add_spent(("project:acme", "day", "2026-11-04"), Decimal(1))
    book.add_spent(("project:acme", "day", period_start("day", NOW)), Decimal(1))
    book.add_spent(("project:acme", "total", "all"), Decimal(2))
    book.mark_settled("old", NOW - 2 * 3600 * 1000)
    book.prune(NOW)
    assert ("project:acme", "day", "2026-11-04") not in book.counters
    assert ("project:acme", "total", "all") in book.counters
    assert not book.is_settled("old")


def test_a_rebuild_waiting_for_the_ledger_at_start_up_is_said_once_and_warned_only_if_it_lasts() -> None:
    import logging

    from services.budget.main import REBUILD_QUIET_S, rebuild_wait_level

    assert rebuild_wait_level(0.0, 0) == logging.INFO
    assert rebuild_wait_level(5.0, 5) == logging.DEBUG  # every second at start-up: not news
    assert rebuild_wait_level(REBUILD_QUIET_S + 1, 31) == logging.WARNING


# --- snapshots (snapshot.py) and the bounded settled-id memory ---------------------------


def test_a_snapshot_round_trips_and_restores_exactly_at_its_positions() -> None:
    from services.budget.snapshot import decode, encode, restore, settle_all, take

    view, key = _view("0.0001", period="total")
    leader = Authority(view)
    for i in range(3):  # reserved and journaled as 1, 2, 3
        assert leader.authorize(_ask(i, key), NOW).allow
    leader.settle(_completion(0, key), NOW)  # settled before the copy: never restored
    snapshot = decode(encode(take(leader.book, events_seq=10, journal_seq=3, now_ms=NOW)))
    assert snapshot.events_seq == 10 and snapshot.journal_seq == 3
    assert {r.request_id for r in snapshot.reservations} == {"req_1", "req_2"}

    # After the copy: req_3 reserved (journal 4), req_1 completes (event 11); the leader dies.
    journal = [(i + 1, _ask(i, key)) for i in range(4)]
    successor = restore(view, snapshot, journal, NOW, grace_ms=10_000)
    assert set(successor.book.reservations) == {"req_1", "req_2", "req_3"}  # not req_0
    settle_all(successor, [_completion(1, key)], NOW)
    total = ("project:acme", "total", period_start("total", NOW))
    assert successor.book.counter(total).spent == 2 * COST
    assert successor.book.counter(total).held == 2 * COST
    # The cap (0.0001 = 9.5 x COST) keeps counting across the takeover: 2 spent + 2 held.
    allowed = sum(successor.authorize(_ask(100 + i, key), NOW).allow for i in range(10))
    assert allowed == 5


def test_an_unknown_snapshot_is_refused() -> None:
    import pytest

    from services.budget.snapshot import decode

    for data in (b"", b"{}", b'{"version": 99}', b'{"version": 1, "events_seq": 1}'):
        with pytest.raises(ValueError):
            decode(data)


def test_the_settled_id_memory_is_bounded_in_count_and_time() -> None:
    book = SpendBook(max_settled=3)
    for i in range(5):
        book.mark_settled(f"req_{i}", NOW + i)
    assert list(book.settled) == ["req_2", "req_3", "req_4"]
    from services.budget.book import SETTLED_MEMORY_MS

    book.prune(NOW + 3 + SETTLED_MEMORY_MS)
    assert list(book.settled) == ["req_3", "req_4"]
