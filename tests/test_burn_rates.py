"""Burn rates and their alerts: rates over windows from spend samples, the projection of when a
cap runs out, the multi-window rule, the budget leader's watch and the alert it sends. Pure."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from services.budget.alerts import (
    BURN_RATE,
    REFUSING,
    RefusalMemory,
    alert_event,
    alert_id,
    alert_message,
    refusal,
    webhook_body,
)
from services.budget.authority import Authority
from services.budget.book import SpendBook
from services.budget.burn_watch import BurnWatch
from services.budget.periods import period_start
from switchyard.burn import (
    BurnWindows,
    Rate,
    SpendSamples,
    burning,
    clock_text,
    exhaustion_ms,
    period_end_ms,
    period_start_ms,
    rates_from_sums,
    window_label,
)
from switchyard.tenancy import Budget, Project, TenancyView, budget_kv_key, project_kv_key


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


NOON = ms("2026-11-24T12:00:00")
HOUR_MS = 3_600_000
WINDOWS = BurnWindows(short_s=3600, long_s=6 * 3600, horizon_s=24 * 3600)


def steady(samples: SpendSamples, start_ms: int, end_ms: int, usd_per_hour: Decimal, step_ms: int) -> None:
    """Samples of a spend that grows at a steady rate from 0 at `start_ms`."""
    for at in range(start_ms, end_ms + 1, step_ms):
        samples.add(at, usd_per_hour * Decimal(at - start_ms) / HOUR_MS)


def test_periods_end_at_the_next_utc_midnight_or_month() -> None:
    assert period_end_ms("day", NOON) == ms("2026-11-25T00:00:00")
    assert period_end_ms("month", NOON) == ms("2026-12-01T00:00:00")
    assert period_end_ms("month", ms("2026-12-31T23:59:59")) == ms("2027-01-01T00:00:00")
    assert period_end_ms("total", NOON) is None
    assert period_start_ms("day", NOON) == ms("2026-11-24T00:00:00")
    assert period_start_ms("month", NOON) == ms("2026-11-01T00:00:00")
    with pytest.raises(ValueError):
        period_end_ms("week", NOON)


def test_a_window_reads_the_rate_from_the_sample_at_its_start() -> None:
    samples = SpendSamples(keep_s=6 * 3600)
    steady(samples, NOON - 6 * HOUR_MS, NOON, Decimal(2), 60_000)  # 2 USD/h for six hours
    rate = samples.rate(3600, NOON)
    assert rate is not None and rate.span_s == 3600 and rate.spent_usd == Decimal(2)
    assert rate.usd_per_hour == Decimal(2)
    # Faster in the last hour: the short window sees it, the long one less so.
    samples.add(NOON + HOUR_MS, Decimal(12) + Decimal(10))
    short, long = samples.rate(3600, NOON + HOUR_MS), samples.rate(6 * 3600, NOON + HOUR_MS)
    assert short is not None and long is not None
    assert short.usd_per_hour == Decimal(10)
    assert long.usd_per_hour == pytest.approx(Decimal(20) / 6, abs=Decimal("0.001"))


def test_samples_keep_one_anchor_before_the_longest_window() -> None:
    samples = SpendSamples(keep_s=3600)
    steady(samples, NOON - 10 * HOUR_MS, NOON, Decimal(1), 60_000)
    assert samples.times_ms[0] <= NOON - HOUR_MS < samples.times_ms[1]
    assert len(samples.times_ms) == 61
    samples.add(NOON, Decimal(99))  # repeated instant: ignored
    assert samples.spent[-1] == Decimal(10)


def test_without_history_a_window_reads_from_the_period_start_at_zero() -> None:
    """A new leader at noon knows the day's spend (6 USD) but not when it was spent: the rate
    is read over the whole day so far, never guessed higher."""
    samples = SpendSamples(keep_s=6 * 3600)
    samples.add(NOON, Decimal(6))
    day_start = period_start_ms("day", NOON)
    rate = samples.rate(3600, NOON, day_start)
    assert rate is not None and rate.span_s == 12 * 3600 and rate.usd_per_hour == Decimal("0.5")
    # A period younger than the window: read over the period (its start is a true 0).
    young = SpendSamples(keep_s=6 * 3600)
    young.add(ms("2026-11-24T00:30:00"), Decimal(1))
    rate = young.rate(3600, ms("2026-11-24T00:30:00"), day_start)
    assert rate is not None and rate.span_s == 1800 and rate.usd_per_hour == Decimal(2)
    assert SpendSamples(keep_s=60).rate(60, NOON) is None


def test_exhaustion_is_headroom_over_the_rate() -> None:
    rate = Rate(3600, 3600, Decimal(2))  # 2 USD/h
    assert exhaustion_ms(Decimal(1), rate, NOON) == NOON + HOUR_MS // 2
    assert exhaustion_ms(Decimal(0), rate, NOON) == NOON  # nothing left: now
    assert exhaustion_ms(Decimal(1), Rate(3600, 3600, Decimal(0)), NOON) is None  # not spending


def test_a_steady_burn_alerts_with_the_time_the_cap_runs_out() -> None:
    samples = SpendSamples(keep_s=WINDOWS.long_s)
    steady(samples, NOON - 6 * HOUR_MS, NOON, Decimal(2), 60_000)  # 12 USD spent by noon
    alert = burning(samples, WINDOWS, cap=Decimal(24), held=Decimal(1), period="day", now_ms=NOON)
    assert alert is not None
    # (24 - 12 - 1) / 2 USD/h = 5.5 h: 17:30 UTC, before the day ends.
    assert alert.short.exhausted_unix_ms == ms("2026-11-24T17:30:00")
    assert alert.short.headroom_usd == Decimal(11)
    assert alert.period_end_ms == ms("2026-11-25T00:00:00")
    # A cap the day's rate does not reach before midnight: no alert.
    assert burning(samples, WINDOWS, Decimal(40), Decimal(0), "day", NOON) is None


def test_a_short_spike_alone_does_not_alert() -> None:
    """The long window must agree: a burst in the last hour after a quiet day is not a burn."""
    samples = SpendSamples(keep_s=WINDOWS.long_s)
    steady(samples, NOON - 6 * HOUR_MS, NOON - HOUR_MS, Decimal("0.01"), 60_000)
    samples.add(NOON, Decimal(3))  # 3 USD within the last hour
    # Short: 3 USD/h -> 10 USD of headroom lasts 3.3 h (before midnight). Long: ~0.5 USD/h -> 20 h.
    assert burning(samples, WINDOWS, Decimal(13), Decimal(0), "day", NOON) is None
    # Sustained for six hours, it alerts.
    sustained = SpendSamples(keep_s=WINDOWS.long_s)
    steady(sustained, NOON - 6 * HOUR_MS, NOON, Decimal("0.5"), 60_000)
    sustained.add(NOON + HOUR_MS, Decimal(3) + Decimal(3))
    assert burning(sustained, WINDOWS, Decimal(13), Decimal(0), "day", NOON + HOUR_MS) is not None


def test_the_horizon_bounds_how_far_ahead_a_month_or_total_cap_alerts() -> None:
    samples = SpendSamples(keep_s=WINDOWS.long_s)
    steady(samples, NOON - 6 * HOUR_MS, NOON, Decimal(1), 60_000)  # 1 USD/h
    # 30 USD of headroom: 30 h away, inside the month but past the 24 h horizon.
    assert burning(samples, WINDOWS, Decimal(36), Decimal(0), "month", NOON) is None
    assert burning(samples, WINDOWS, Decimal(26), Decimal(0), "month", NOON) is not None
    assert burning(samples, WINDOWS, Decimal(26), Decimal(0), "total", NOON) is not None
    assert burning(samples, WINDOWS, Decimal(36), Decimal(0), "total", NOON) is None


def test_window_labels_and_clock_text() -> None:
    assert [window_label(s) for s in (3600, 21600, 60, 90, 2.5)] == [
        "hour",
        "6 hours",
        "minute",
        "90 s",
        "2.5 s",
    ]
    assert clock_text(ms("2026-11-24T15:40:00"), NOON) == "15:40:00 UTC"
    assert clock_text(ms("2026-11-25T01:00:00"), NOON) == "2026-11-25 01:00:00 UTC"
    with pytest.raises(ValueError):
        BurnWindows(short_s=7200, long_s=3600)


def test_rates_from_the_ledgers_window_sums_stay_within_the_period() -> None:
    at = ms("2026-11-24T00:30:00")
    short, long = rates_from_sums([(3600, Decimal(1)), (21600, Decimal(5))], at, "day", Decimal(1))
    assert (short.span_s, long.span_s) == (1800, 1800)  # the day is 30 min old
    assert long.spent_usd == Decimal(1)  # yesterday's spend is not this day's
    (total,) = rates_from_sums([(3600, Decimal(2))], at, "total", Decimal(9))
    assert (total.span_s, total.usd_per_hour) == (3600, Decimal(2))


def _authority(cap: str, period: str = "day") -> tuple[Authority, Budget]:
    view = TenancyView()
    view.apply(project_kv_key("acme"), Project(id="acme").to_bytes())
    budget = Budget(scope="project", scope_id="acme", period=period, cap_usd=Decimal(cap), project_id="acme")
    view.apply(budget_kv_key("project", "acme", period), budget.to_bytes())
    return Authority(view, SpendBook()), budget


def test_the_watch_samples_every_budget_and_owes_one_alert_per_period_and_cap() -> None:
    authority, budget = _authority("24")
    watch = BurnWatch(WINDOWS)
    slot = ("project:acme", "day", period_start("day", NOON))
    alerts = []
    for minute in range(0, 6 * 60 + 1):  # 2 USD/h from 06:00
        at = NOON - 6 * HOUR_MS + minute * 60_000
        authority.book.add_spent(slot, Decimal(2) / 60 if minute else Decimal(0))
        alerts += watch.tick(authority, at)
    assert len(alerts) == 1  # owed once, not once per tick
    crossing = alerts[0]
    assert crossing.kind == BURN_RATE and crossing.burn is not None
    assert alert_id(crossing) == f"alert.project.acme.day.{slot[2]}.24.burn_rate"
    event = alert_event(crossing, NOON)
    assert event.kind == BURN_RATE and event.window_ms == 3_600_000 and event.long_window_ms == 21_600_000
    assert event.projected_unix_ms == crossing.burn.short.exhausted_unix_ms
    assert event.rate_usd_per_hour == "2"
    text = alert_message(event)
    assert text.startswith(
        "project:acme: at the last hour's rate (2 USD/h) the day cap of 24 USD is reached at "
    )
    body = webhook_body(event, alert_id(crossing))
    assert body["kind"] == BURN_RATE and body["projected_unix_ms"] == event.projected_unix_ms
    # The next day is a new period: its own alert when it burns again; old samples are dropped.
    tomorrow = NOON + 24 * HOUR_MS
    watch.tick(authority, tomorrow)
    assert all(s[2] != slot[2] for s in watch.samples)
    # A changed cap is a new alert id (it alerts afresh), like thresholds.
    raised = budget.model_copy(update={"cap_usd": Decimal(25)})
    assert alert_id(crossing) != alert_id(type(crossing)(raised, slot[2], 0, Decimal(0), kind=BURN_RATE))


def test_the_watch_counts_held_money_in_the_headroom() -> None:
    authority, _ = _authority("10")
    watch = BurnWatch(BurnWindows(short_s=60, long_s=120, horizon_s=600))
    slot = ("project:acme", "day", period_start("day", NOON))
    for second in range(0, 121, 5):
        authority.book.add_spent(slot, Decimal("0.01") if second else Decimal(0))  # 0.12 USD/min
        assert watch.tick(authority, NOON + second * 1000) == []  # 10 USD lasts ~80 min: past 10 min
    authority.book.counters[slot].held = Decimal("8.7")  # in flight: what is left is ~1 USD
    (crossing,) = watch.tick(authority, NOON + 125_000)
    assert crossing.reserved == Decimal("8.7")
    assert crossing.burn is not None and crossing.burn.short.headroom_usd < Decimal("1.1")


def test_the_refusing_alert_says_how_many_were_refused() -> None:
    _, budget = _authority("1")
    memory = RefusalMemory()
    first = refusal(budget, "2026-11-24", Decimal(1), Decimal(0), Decimal("0.1"))
    assert memory.first(first)
    for _ in range(4):
        assert not memory.first(refusal(budget, "2026-11-24", Decimal(1), Decimal(0), Decimal("0.1")))
    assert memory.count(first) == 5
    event = alert_event(first, NOON, memory.count(first))
    assert event.kind == REFUSING and event.refused_count == 5
    assert alert_message(event).endswith("; 5 refused so far")
    assert webhook_body(event, "x")["refused_count"] == 5
    assert memory.count(refusal(budget, "2026-11-25", Decimal(1), Decimal(0), Decimal("0.1"))) == 0


def test_an_alert_is_one_ledger_row_and_the_dashboard_counts_its_refusals() -> None:
    from services.ledger.alerts import ALERT_COLUMNS, alert_row
    from services.ledger.dashboard.queries import alert_rows

    authority, budget = _authority("24")
    watch = BurnWatch(WINDOWS)
    slot = ("project:acme", "day", period_start("day", NOON))
    crossings = []
    for minute in range(0, 6 * 60 + 1, 10):
        authority.book.add_spent(slot, Decimal(2) / 6 if minute else Decimal(0))
        crossings += watch.tick(authority, NOON - 6 * HOUR_MS + minute * 60_000)
    (crossing,) = crossings
    event = alert_event(crossing, NOON)
    row = dict(zip(ALERT_COLUMNS, alert_row(event, alert_id(crossing)), strict=True))
    assert row["alert_id"] == alert_id(crossing) and row["kind"] == BURN_RATE
    assert row["projected_at"] is not None and row["message"] == event.message
    assert row["rate_usd_per_hour"] == Decimal(2)
    # Without a message id (an old sender) the row still has a stable id.
    assert alert_row(event, "")[0] == f"alert.project.acme.day.{slot[2]}.burn_rate"

    shown = alert_rows(
        [
            {
                "kind": "refusing",
                "scope_kind": "project",
                "scope_id": "acme",
                "period": "day",
                "period_start": "2026-11-24",
                "refused_count": 1,
            },
            {
                "kind": "threshold",
                "scope_kind": "project",
                "scope_id": "acme",
                "period": "day",
                "period_start": "2026-11-24",
                "refused_count": 0,
            },
        ],
        [{"scope": "project:acme", "period": "day", "period_start": "2026-11-24", "refused": 7}],
    )
    assert shown[0]["refused_count"] == 7 and shown[0]["scope"] == "project:acme"
    assert shown[1]["refused_count"] == 0  # thresholds have no refusals to count
    assert budget.scope_label == "project:acme"


def test_a_budget_leases_slack_is_not_counted_as_held_by_requests() -> None:
    from services.budget import escrow
    from services.budget.burn_watch import requests_held
    from services.budget.pressure import pressure

    authority, _ = _authority("10")
    slot = ("project:acme", "day", period_start("day", NOON))
    authority.book.add_spent(slot, Decimal(6))
    authority.book.counters[slot].held = Decimal(1)  # a request in flight
    lease = escrow.Lease(
        "lease_1", "router-1", ("project:acme",), "acme", "", "", Decimal(2), Decimal(2), NOON, NOON + 60_000
    )
    escrow.grant(authority.book, lease)
    authority.leases[lease.lease_id] = lease
    assert authority.book.counter(slot).held == Decimal(3)
    assert requests_held(authority, slot) == Decimal(1)
    assert pressure(authority, NOON)["scopes"]["project:acme"]["used_pct"] == 70.0  # (6 + 1) / 10
