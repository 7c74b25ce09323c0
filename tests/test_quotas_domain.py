"""Provider quotas, pure: catalog limits, the quota book, the authority's choice of candidate,
provider rate-limit headers, and the router's quota-aware ranking."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from services.budget.authority import Authority
from services.budget.quotas import QuotaBook, QuotaNeed
from services.budget.rebuild import rebuild
from services.ledger.dashboard.queries import quota_rows as dashboard_quota_rows
from services.ledger.quotas import QUOTA_COLUMNS, QuotaSampler, quota_rows
from services.providers.adapters.ratelimits import duration_s, parse_rate_limits, until_s
from services.router.quota import MIN_FACTOR, NEAR_QUOTA, STALE_AFTER_S, QuotaView, quota_factor
from services.router.ranking import CandidateState, quota_chain, rank
from services.router.strategy import PRESETS
from switchyard.catalog import Deployment, ProviderLimits, build_catalog
from switchyard.tenancy import Limits, Project, TenancyView, issue_key, key_kv_key, project_kv_key
from switchyard.v1 import budget_pb2, events_pb2, invoke_pb2

T0 = 1_000.0  # seconds, the quota book's clock
NOW_MS = 1_794_000_000_000


# --- catalog -----------------------------------------------------------------------------------


def test_deployment_limits_come_from_the_catalog() -> None:
    config = {
        "demo": {"enabled": False},
        "deployments": [
            {
                "id": "a",
                "provider": "openai",
                "model": "m",
                "api_key": "k",
                "limits": {"rpm": 5, "tpm": 9000},
            },
            {"id": "b", "provider": "openai", "model": "m", "api_key": "k"},
        ],
    }
    catalog = build_catalog(config, {})
    assert catalog.deployments["a"].limits == ProviderLimits(rpm=5, tpm=9000)
    assert catalog.deployments["b"].limits == ProviderLimits() and not catalog.deployments["b"].limits.any


@pytest.mark.parametrize("limits", [{"rpn": 5}, {"rpm": -1}, {"rpm": 1.5}, {"rpm": True}, [5]])
def test_bad_limits_stop_the_start_with_the_deployment_named(limits: object) -> None:
    config = {
        "deployments": [{"id": "a", "provider": "openai", "model": "m", "api_key": "k", "limits": limits}]
    }
    with pytest.raises(ValueError, match="deployment 'a'"):
        build_catalog(config, {})


# --- the quota book ----------------------------------------------------------------------------


def test_requests_per_minute_refill_continuously_and_report_the_wait() -> None:
    book = QuotaBook({"a": ProviderLimits(rpm=6)}, T0)
    for i in range(6):
        assert book.wait_s(QuotaNeed("a"), T0) == 0
        book.take(f"r{i}", QuotaNeed("a"), T0)
    assert book.wait_s(QuotaNeed("a"), T0) == pytest.approx(10.0)  # 6 per minute: one per 10 s
    assert book.wait_s(QuotaNeed("a"), T0 + 10.0) == 0
    assert book.wait_s(QuotaNeed("unlimited"), T0) == 0


def test_choose_takes_the_first_candidate_with_headroom_and_lists_the_ones_at_quota() -> None:
    book = QuotaBook({"a": ProviderLimits(rpm=1), "b": ProviderLimits(rpm=1)}, T0)
    book.take("r0", QuotaNeed("a"), T0)
    index, skipped = book.choose([QuotaNeed("a"), QuotaNeed("b")], T0)
    assert index == 1 and [d for d, _ in skipped] == ["a"] and skipped[0][1] == pytest.approx(60.0)
    book.take("r1", QuotaNeed("b"), T0 + 30)
    index, skipped = book.choose([QuotaNeed("a"), QuotaNeed("b")], T0 + 30)
    assert index is None
    assert dict(skipped) == pytest.approx({"a": 30.0, "b": 60.0})


def test_token_limits_take_the_estimate_and_settlement_returns_what_was_not_used() -> None:
    limits = ProviderLimits(tpm=1000, input_tpm=600, output_tpm=500)
    book = QuotaBook({"a": limits}, T0)
    book.take("r", QuotaNeed("a", input_tokens=200, output_tokens=400), T0)
    buckets = book.quotas["a"].buckets
    assert (buckets["tokens"].tokens, buckets["input_tokens"].tokens, buckets["output_tokens"].tokens) == (
        400,
        400,
        100,
    )
    assert book.wait_s(QuotaNeed("a", 100, 200), T0) > 0  # output bucket has 100 left
    book.settle("r", "a", input_used=150, output_used=50, now_s=T0)
    assert buckets["tokens"].tokens == 800 and buckets["input_tokens"].tokens == 450
    assert buckets["output_tokens"].tokens == 450
    assert book.wait_s(QuotaNeed("a", 100, 200), T0) == 0
    book.settle("r", "a", 150, 50, T0)  # a repeated settlement changes nothing
    assert buckets["tokens"].tokens == 800


def test_output_need_is_capped_at_one_minute_and_an_oversized_prompt_never_fits() -> None:
    book = QuotaBook({"a": ProviderLimits(input_tpm=100, output_tpm=50)}, T0)
    assert book.wait_s(QuotaNeed("a", 10, 4096), T0) == 0  # no max_tokens: takes the whole minute
    assert math.isinf(book.wait_s(QuotaNeed("a", 101, 1), T0))


def test_concurrency_is_held_until_the_request_settles_or_expires() -> None:
    book = QuotaBook({"a": ProviderLimits(max_concurrent=2)}, T0)
    book.take("r1", QuotaNeed("a"), T0)
    book.take("r2", QuotaNeed("a"), T0)
    assert book.wait_s(QuotaNeed("a"), T0) > 0
    assert book.quotas["a"].headroom(T0) == 0
    book.settle("r1", "a", 1, 1, T0)
    assert book.wait_s(QuotaNeed("a"), T0) == 0
    book.take("r3", QuotaNeed("a"), T0)
    book.release("r2")  # expired
    assert book.wait_s(QuotaNeed("a"), T0) == 0 and len(book.quotas["a"].in_flight) == 1


def test_a_failover_charges_the_deployment_that_answered_and_refunds_the_tokens_of_the_one_held() -> None:
    book = QuotaBook({"a": ProviderLimits(rpm=10, tpm=1000), "b": ProviderLimits(rpm=10, tpm=1000)}, T0)
    book.take("r", QuotaNeed("a", 100, 100), T0)
    book.settle("r", "b", input_used=80, output_used=20, now_s=T0)
    a, b = book.quotas["a"].buckets, book.quotas["b"].buckets
    assert a["requests"].tokens == 9  # the failed call was still sent
    assert a["tokens"].tokens == 1000
    assert b["requests"].tokens == 9 and b["tokens"].tokens == 900


def test_provider_headers_only_lower_the_buckets() -> None:
    book = QuotaBook({"a": ProviderLimits(rpm=60, tpm=10_000)}, T0)
    book.observe("a", events_pb2.ProviderRateLimits(requests_remaining=3, tokens_remaining=50_000), T0)
    assert book.quotas["a"].buckets["requests"].tokens == 3
    assert book.quotas["a"].buckets["tokens"].tokens == 10_000  # higher than ours: ignored
    # Nothing left, fully replenished in 60 s: at 60 per minute the next request fits in 1 s.
    book.observe("a", events_pb2.ProviderRateLimits(requests_remaining=0, requests_reset_ms=60_000.0), T0)
    assert book.wait_s(QuotaNeed("a"), T0) == pytest.approx(1.0)
    book.back_off("a", 20.0, T0)  # a 429 with Retry-After: 20
    assert book.wait_s(QuotaNeed("a"), T0) == pytest.approx(20.0)
    book.observe("unknown", events_pb2.ProviderRateLimits(requests_remaining=0), T0)  # ignored


def test_a_provider_limit_below_the_declared_one_is_adopted() -> None:
    book = QuotaBook({"a": ProviderLimits(rpm=100)}, T0)
    headers = events_pb2.ProviderRateLimits(
        requests_limit=3, requests_remaining=0, requests_reset_ms=60_000.0
    )
    book.observe("a", headers, T0)
    assert book.wait_s(QuotaNeed("a"), T0) == pytest.approx(20.0)  # 3 per minute: one per 20 s
    assert book.state(T0, NOW_MS).deployments[0].rpm_limit == 3
    book.observe("a", events_pb2.ProviderRateLimits(requests_limit=500, requests_remaining=400), T0)
    assert book.quotas["a"].buckets["requests"].capacity == 3  # never raised


def test_state_reports_limits_use_and_headroom() -> None:
    book = QuotaBook({"a": ProviderLimits(rpm=10, max_concurrent=4), "b": ProviderLimits()}, T0)
    for i in range(4):
        book.take(f"r{i}", QuotaNeed("a"), T0)
    book.refuse(["a"])
    state = book.state(T0, NOW_MS)
    assert [d.deployment_id for d in state.deployments] == ["a"]  # b has no limits
    a = state.deployments[0]
    assert (a.rpm_limit, a.requests_available, a.max_concurrent, a.concurrent) == (10, 6.0, 4, 4)
    assert a.headroom == 0.0 and a.wait_ms == pytest.approx(1000.0)  # concurrency is full
    assert (a.granted, a.refused) == (4, 1)


def test_limits_change_live() -> None:
    book = QuotaBook({"a": ProviderLimits(rpm=2)}, T0)
    book.take("r", QuotaNeed("a"), T0)
    book.configure({"a": ProviderLimits(rpm=1)}, T0)
    assert book.quotas["a"].buckets["requests"].tokens == 1
    book.configure({}, T0)
    assert not book.quotas


# --- the authority -----------------------------------------------------------------------------


def _view() -> tuple[TenancyView, str]:
    view = TenancyView()
    view.apply(project_kv_key("acme"), Project(id="acme", limits=Limits()).to_bytes())
    record, _ = issue_key("acme", limits=Limits())
    view.apply(key_kv_key(record.id), record.to_bytes())
    return view, record.id


def _ask(i: int, key_id: str, chain: tuple[str, ...] = ("a", "b")) -> budget_pb2.AuthorizeRequest:
    ask = budget_pb2.AuthorizeRequest(
        request_id=f"req_{i}", project_id="acme", key_id=key_id, deployment_id=chain[0],
        max_cost_usd="0.001", estimated_tokens=30, received_unix_ms=NOW_MS, deadline_unix_ms=NOW_MS + 120_000,
    )  # fmt: skip
    for deployment_id in chain:
        ask.candidates.add(
            deployment_id=deployment_id, max_cost_usd="0.001", input_tokens=10, output_tokens=20
        )
    return ask


def _authority(limits: dict[str, ProviderLimits]) -> tuple[Authority, str]:
    view, key_id = _view()
    return Authority(view, quotas=QuotaBook(limits, NOW_MS / 1000)), key_id


def test_a_burst_spreads_over_two_keys_then_is_denied_with_the_soonest_free_slot() -> None:
    authority, key = _authority({"a": ProviderLimits(rpm=5), "b": ProviderLimits(rpm=5)})
    verdicts = [authority.authorize(_ask(i, key), NOW_MS) for i in range(15)]
    allowed = [v for v in verdicts if v.allow]
    assert [v.deployment_id for v in allowed] == ["a"] * 5 + ["b"] * 5
    assert all(v.at_quota == ("a",) for v in allowed[5:])
    denied = [v for v in verdicts if not v.allow]
    assert len(denied) == 5
    assert all(v.code == "rate_limited" and v.retry_after_s == pytest.approx(12.0) for v in denied)
    assert "every candidate deployment is at its provider quota" in denied[0].reason
    assert denied[0].scope == "deployment:a"
    assert denied[0].to_proto("req_x").deployment_id == ""
    # A repeated ask gets the same deployment, and takes nothing more.
    again = authority.authorize(_ask(7, key), NOW_MS)
    assert again.allow and again.deployment_id == "b" and again.reservation is None
    # 12 s later one slot per key is free again.
    later = NOW_MS + 12_000
    assert [authority.authorize(_ask(20 + i, key), later).allow for i in range(3)] == [True, True, False]


def test_settlement_frees_concurrency_and_expiry_does_too() -> None:
    authority, key = _authority({"a": ProviderLimits(max_concurrent=1)})
    assert authority.authorize(_ask(1, key, ("a",)), NOW_MS).allow
    denied = authority.authorize(_ask(2, key, ("a",)), NOW_MS)
    assert not denied.allow and denied.code == "rate_limited" and denied.retry_after_s == 1.0
    completion = events_pb2.Completion(
        request_id="req_1", project_id="acme", key_id=key, deployment_id="a", cost_usd="0.0001",
        status=invoke_pb2.STATUS_OK, started_unix_ms=NOW_MS, usage=invoke_pb2.Usage(prompt_tokens=5, completion_tokens=5),
    )  # fmt: skip
    authority.settle(completion, NOW_MS)
    assert authority.authorize(_ask(3, key, ("a",)), NOW_MS).allow
    authority.expire(NOW_MS + 200_000, grace_ms=10_000)
    assert authority.authorize(_ask(4, key, ("a",)), NOW_MS + 200_000).allow


def test_an_ask_without_candidates_is_checked_on_its_deployment() -> None:
    authority, key = _authority({"a": ProviderLimits(rpm=1)})
    plain = budget_pb2.AuthorizeRequest(
        request_id="p1", project_id="acme", key_id=key, deployment_id="a", max_cost_usd="0.001",
        received_unix_ms=NOW_MS,
    )  # fmt: skip
    assert authority.authorize(plain, NOW_MS).deployment_id == "a"
    plain.request_id = "p2"
    assert not authority.authorize(plain, NOW_MS).allow


def test_a_successor_restores_the_quota_of_journaled_reservations() -> None:
    view, key = _view()
    limits = {"a": ProviderLimits(rpm=2, max_concurrent=5), "b": ProviderLimits(rpm=2)}
    journal = []
    for i in range(2):
        ask = _ask(i, key)
        ask.deployment_id = "a"  # what the leader reserved on (main.py journals it)
        journal.append(ask)
    successor = rebuild(view, [], [], journal, set(), NOW_MS, 10_000, QuotaBook(limits, NOW_MS / 1000))
    assert len(successor.quotas.quotas["a"].in_flight) == 2
    verdict = successor.authorize(_ask(9, key), NOW_MS)
    assert verdict.deployment_id == "b" and verdict.at_quota == ("a",)


# --- provider rate-limit headers ---------------------------------------------------------------

AT = datetime(2025, 8, 21, 12, 40, 50, tzinfo=UTC)


def test_openai_headers() -> None:
    # As api.openai.com sends them on /v1/chat/completions.
    headers = {
        "x-ratelimit-limit-requests": "5000",
        "x-ratelimit-limit-tokens": "160000",
        "x-ratelimit-remaining-requests": "4999",
        "x-ratelimit-remaining-tokens": "159976",
        "x-ratelimit-reset-requests": "12ms",
        "x-ratelimit-reset-tokens": "6m0s",
    }
    parsed = parse_rate_limits(headers, AT)
    assert parsed is not None
    assert (parsed.requests_limit, parsed.requests_remaining, parsed.requests_reset_ms) == (5000, 4999, 12.0)
    assert (parsed.tokens_limit, parsed.tokens_remaining, parsed.tokens_reset_ms) == (
        160000,
        159976,
        360_000.0,
    )
    assert not parsed.HasField("input_tokens_remaining")


def test_anthropic_headers() -> None:
    headers = {
        "anthropic-ratelimit-requests-limit": "1000",
        "anthropic-ratelimit-requests-remaining": "999",
        "anthropic-ratelimit-requests-reset": "2025-08-21T12:40:59Z",
        "anthropic-ratelimit-tokens-limit": "96000",
        "anthropic-ratelimit-tokens-remaining": "96000",
        "anthropic-ratelimit-tokens-reset": "2025-08-21T12:40:59Z",
        "anthropic-ratelimit-input-tokens-limit": "80000",
        "anthropic-ratelimit-input-tokens-remaining": "79000",
        "anthropic-ratelimit-input-tokens-reset": "2025-08-21T12:40:59Z",
        "anthropic-ratelimit-output-tokens-limit": "16000",
        "anthropic-ratelimit-output-tokens-remaining": "15000",
        "anthropic-ratelimit-output-tokens-reset": "2025-08-21T12:41:00Z",
    }
    parsed = parse_rate_limits(headers, AT)
    assert parsed is not None
    assert (parsed.requests_remaining, parsed.requests_reset_ms) == (999, 9000.0)
    assert (parsed.input_tokens_remaining, parsed.output_tokens_remaining) == (79000, 15000)
    assert parsed.output_tokens_reset_ms == 10_000.0


def test_unknown_or_broken_headers_are_left_unset() -> None:
    assert parse_rate_limits({"content-type": "application/json"}, AT) is None
    azure = parse_rate_limits(
        {"x-ratelimit-remaining-tokens": "-1", "x-ratelimit-remaining-requests": "12",
         "x-ratelimit-reset-requests": "soon"}, AT,
    )  # fmt: skip
    assert azure is not None and azure.requests_remaining == 12
    assert not azure.HasField("tokens_remaining") and not azure.HasField("requests_reset_ms")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("2.5", 2.5),
        ("", None),
        ("3x", None),
    ],
)
def test_durations(text: str, seconds: float | None) -> None:
    assert duration_s(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_instants() -> None:
    assert until_s("2025-08-21T12:41:00Z", AT) == 10.0
    assert until_s("2025-08-21T12:00:00+00:00", AT) == 0.0
    assert until_s("not a date", AT) is None


# --- the router's view and ranking -------------------------------------------------------------


def _dep(deployment_id: str) -> Deployment:
    return Deployment(id=deployment_id, provider="openai", model="m", adapter="openai")


def test_quota_factor_is_one_above_near_quota_and_falls_to_the_floor() -> None:
    assert quota_factor(1.0) == quota_factor(NEAR_QUOTA) == 1.0
    assert quota_factor(0.0) == MIN_FACTOR
    assert MIN_FACTOR < quota_factor(NEAR_QUOTA / 2) < 1.0


def test_the_view_forgets_a_stale_state_and_counts_the_wait_down() -> None:
    view = QuotaView()
    state = budget_pb2.QuotaState()
    state.deployments.add(deployment_id="a", headroom=0.0, wait_ms=3000.0)
    view.update(state, 100.0)
    assert view.reading("a", 101.0).wait_s == pytest.approx(2.0)
    assert view.reading("b", 101.0).headroom == 1.0
    assert view.reading("a", 100.0 + STALE_AFTER_S + 1).wait_s == 0.0


def test_near_quota_scores_lower_and_at_quota_goes_last() -> None:
    a, b, c = _dep("a"), _dep("b"), _dep("c")
    states = {
        "a": CandidateState(quota_headroom=0.05),
        "b": CandidateState(quota_headroom=0.0, quota_wait_s=4.0),
        "c": CandidateState(),
    }
    result = rank(
        "r", [a, b, c], states, PRESETS["balanced"], strategy="t", prompt_tokens=10, expected_output=10
    )
    assert [d.id for d in result.chain] == ["c", "a", "b"]
    scores = {s.deployment_id: s for s in result.rationale.candidates}
    assert scores["a"].total == pytest.approx(scores["c"].total * quota_factor(0.05))
    assert scores["b"].quota_wait_ms == 4000.0 and scores["a"].quota_headroom == 0.05
    assert "quota headroom" in result.rationale.reason


def test_the_chain_follows_the_authoritys_choice() -> None:
    a, b, c = _dep("a"), _dep("b"), _dep("c")
    result = rank("r", [a, b, c], {}, PRESETS["balanced"], strategy="t", prompt_tokens=10, expected_output=10)
    decision = budget_pb2.Decision(allow=True, deployment_id="b", at_quota=["a"])
    chain = quota_chain(result, decision, max_chain=3)
    assert [d.id for d in chain] == ["b", "c"]
    assert list(result.rationale.chain) == ["b", "c"] and result.rationale.winner == "b"
    a_score = next(s for s in result.rationale.candidates if s.deployment_id == "a")
    assert a_score.excluded_reason == "quota" and not a_score.eligible
    assert result.rationale.reason.startswith("a at provider quota; b is the best with headroom")
    plain = rank("r", [a, b, c], {}, PRESETS["balanced"], strategy="t", prompt_tokens=10, expected_output=10)
    assert [d.id for d in quota_chain(plain, budget_pb2.Decision(allow=True), max_chain=2)] == ["a", "b"]


# --- the ledger's samples ----------------------------------------------------------------------


def test_quota_rows_and_sampling() -> None:
    book = QuotaBook({"a": ProviderLimits(rpm=10)}, T0)
    book.take("r", QuotaNeed("a"), T0)
    state = book.state(T0, NOW_MS)
    rows = quota_rows(state)
    assert len(rows) == 1 and len(rows[0]) == len(QUOTA_COLUMNS)
    row = dict(zip(QUOTA_COLUMNS, rows[0], strict=True))
    assert row["deployment_id"] == "a" and row["rpm_limit"] == 10 and row["requests_available"] == 9.0
    assert row["ts"] == datetime.fromtimestamp(NOW_MS / 1000, UTC) and row["granted"] == 1

    sampler = QuotaSampler(every_s=10.0)
    assert sampler.take(0.0) is None  # nothing heard yet
    sampler.offer(state)
    assert sampler.take(0.0) is state
    assert sampler.take(5.0) is None  # too soon
    assert sampler.take(20.0) is None  # nothing changed: an idle gateway writes nothing
    book.take("r2", QuotaNeed("a"), T0)
    sampler.offer(book.state(T0, NOW_MS + 1000))
    assert sampler.take(20.0) is not None


def test_the_dashboard_shows_each_declared_limit_in_use() -> None:
    rows = dashboard_quota_rows(
        [
            {
                "deployment_id": "a", "sampled_at": 1, "rpm": 10, "rpm_left": 2.5, "tpm": 0, "tpm_left": 0,
                "input_tpm": 1000, "input_tpm_left": 1200, "output_tpm": 0, "output_tpm_left": 0,
                "concurrency": 4, "in_flight": 1, "headroom_now": 0.25, "headroom_min": 0.0,
                "granted_total": 7, "refused_total": 3,
            }
        ]
    )  # fmt: skip
    assert rows == [
        {
            "deployment": "a",
            "sampled_at": 1,
            "limits": [
                {"limit": "requests / min", "of": 10, "used_pct": 75.0},
                {"limit": "input tokens / min", "of": 1000, "used_pct": 0.0},
                {"limit": "in flight", "of": 4, "used_pct": 25.0},
            ],
            "headroom": 0.25,
            "min_headroom": 0.0,
            "granted": 7,
            "refused": 3,
        }
    ]
