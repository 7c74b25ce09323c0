"""The hedging policy, pure: when the router arms a hedge and after how long, the hold that covers
both racers, the worker's share cap, the TTFT percentile, the request's header and the config."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from services.ingress.hints import Hedge, hints_from_headers, parse_hedge
from services.providers.hedge_policy import HedgeWindow
from services.router.health import Recent
from services.router.hedging import BUDGET_SKIP, Observed, disarm, plan_hedge
from services.router.quota import QuotaReading
from services.router.reservation import chain_holds, hedged_holds
from switchyard.catalog import build_catalog
from switchyard.config import ConfigError, HedgeConfig, parse_config
from switchyard.errors import GatewayError
from switchyard.v1 import invoke_pb2

DEPLOYMENTS = [
    {"id": "a", "provider": "demo", "model": "a"},
    {"id": "b", "provider": "demo", "model": "b"},
]


def catalog(**route: object):
    config = {
        "demo": {"enabled": False},
        "deployments": DEPLOYMENTS,
        "routes": {"r": {"deployments": ["a", "b"], **route}},
    }
    return build_catalog(config, {})


def request(stream: bool = True, hedge: invoke_pb2.HedgeChoice | None = None) -> invoke_pb2.InvokeRequest:
    req = invoke_pb2.InvokeRequest(model="r", stream=stream)
    if hedge is not None:
        req.hedge.CopyFrom(hedge)
    return req


def observed(ms: float, samples: int = 100):
    return lambda deployment_id, p: Observed(ms, samples)


def free(deployment_id: str) -> QuotaReading:
    return QuotaReading()


def plan(cat, req, obs=observed(120.0), quota=free):
    chain = [cat.deployments["a"], cat.deployments["b"]]
    return plan_hedge(cat.route("r"), req, chain, obs, quota)


def test_a_route_without_a_policy_does_not_hedge_and_says_nothing() -> None:
    hedge = plan(catalog(), request())
    assert hedge.plan is None and hedge.note is None


def test_the_delay_is_the_percentile_of_the_first_deployments_ttft() -> None:
    hedge = plan(catalog(hedge={"percentile": 90}), request())
    assert hedge.plan is not None and hedge.plan.delay_ms == 120.0
    assert hedge.note is not None and hedge.note.armed
    assert hedge.note.delay_source == "p90 ttft of a"
    assert hedge.plan.max_hedges == 1 and hedge.plan.max_share == pytest.approx(0.1)


def test_the_percentile_is_floored_and_stands_in_until_enough_samples() -> None:
    cat = catalog(hedge={"min_delay_ms": 200, "min_samples": 20})
    fast = plan(cat, request(), observed(30.0))
    assert fast.plan is not None and fast.plan.delay_ms == 200
    few = plan(cat, request(), observed(900.0, samples=3))
    assert few.plan is not None and few.plan.delay_ms == 200
    assert few.note is not None and "3 samples" in few.note.delay_source


def test_a_fixed_delay_wins_over_the_percentile_and_the_request_over_both() -> None:
    cat = catalog(hedge={"delay_ms": 300})
    fixed = plan(cat, request())
    assert fixed.plan is not None and fixed.plan.delay_ms == 300
    asked = plan(cat, request(hedge=invoke_pb2.HedgeChoice(delay_ms=75)))
    assert asked.plan is not None and asked.plan.delay_ms == 75
    assert asked.note is not None and asked.note.delay_source == "request"


def test_a_request_can_turn_hedging_on_for_a_route_without_a_policy_and_off_for_one_with() -> None:
    on = plan(catalog(), request(hedge=invoke_pb2.HedgeChoice()))
    assert on.plan is not None
    off = plan(catalog(hedge={}), request(hedge=invoke_pb2.HedgeChoice(off=True)))
    assert off.plan is None and off.note is not None and "turned hedging off" in off.note.skipped


def test_a_route_with_side_effects_is_never_hedged_even_when_asked() -> None:
    hedge = plan(catalog(hedge={}, side_effects=True), request(hedge=invoke_pb2.HedgeChoice(delay_ms=10)))
    assert hedge.plan is None
    assert hedge.note is not None and "side effects" in hedge.note.skipped


def test_no_hedge_onto_a_deployment_near_its_provider_quota() -> None:
    def tight(deployment_id: str) -> QuotaReading:
        return QuotaReading(headroom=0.05) if deployment_id == "b" else QuotaReading()

    hedge = plan(catalog(hedge={}), request(), quota=tight)
    assert (
        hedge.plan is None and hedge.note is not None and "b is near its provider quota" in hedge.note.skipped
    )


def test_no_hedge_without_a_second_deployment() -> None:
    cat = catalog(hedge={})
    hedge = plan_hedge(cat.route("r"), request(), [cat.deployments["a"]], observed(10), free)
    assert hedge.plan is None and hedge.note is not None and "no second deployment" in hedge.note.skipped


def test_disarm_keeps_the_delay_and_says_why() -> None:
    hedge = disarm(plan(catalog(hedge={}), request()), BUDGET_SKIP)
    assert hedge.plan is None and hedge.note is not None
    assert hedge.note.skipped == BUDGET_SKIP and not hedge.note.armed and hedge.note.delay_ms == 120


def test_the_hold_of_a_hedged_request_covers_both_racers() -> None:
    costs = [Decimal("0.010"), Decimal("0.004"), Decimal("0.020")]
    assert chain_holds(costs, 3) == [Decimal("0.020"), Decimal("0.020"), Decimal("0.020")]
    # Racing 0 and 1 costs 0.014, less than failing over to 2; racing 1 and 2 costs 0.024.
    assert hedged_holds(costs, 3) == [Decimal("0.020"), Decimal("0.024"), Decimal("0.020")]
    assert hedged_holds([Decimal(1), Decimal(2)], 2) == [Decimal(3), Decimal(2)]


def test_the_share_cap_counts_hedges_against_armed_requests_in_the_window() -> None:
    window = HedgeWindow()
    now = 1000.0
    window.armed("r", now, 60)
    assert not window.may_fire("r", 0.1, 60, now)  # 1 hedge in 1 request is 100 %
    for i in range(9):
        window.armed("r", now + i * 0.1, 60)
    assert window.may_fire("r", 0.1, 60, now + 1)  # 1 in 10
    window.fired("r", now + 1, 60)
    assert not window.may_fire("r", 0.1, 60, now + 1)  # a second would be 2 in 10
    assert window.share("r", now + 1, 60) == pytest.approx(0.1)
    # The window slides: old requests and hedges leave it.
    for i in range(10):
        window.armed("r", now + 200 + i * 0.1, 60)
    assert window.share("r", now + 201, 60) == 0.0
    assert window.may_fire("r", 0.1, 60, now + 201)
    assert window.may_fire("other", 1.0, 60, now)  # routes are counted apart


def test_the_percentile_is_nearest_rank_over_recent_samples() -> None:
    recent = Recent()
    assert recent.percentile(90) == 0.0
    for value in range(1, 101):
        recent.add(float(value))
    assert recent.percentile(90) == 90.0
    assert recent.percentile(50) == 50.0
    for _ in range(300):  # bounded: old samples drop out
        recent.add(5.0)
    assert recent.percentile(99) == 5.0


def test_the_hedge_header() -> None:
    assert parse_hedge("off") == Hedge(off=True)
    assert parse_hedge("on") == Hedge()
    assert parse_hedge("250ms") == Hedge(delay_ms=250.0)
    assert parse_hedge(" 80 ") == Hedge(delay_ms=80.0)
    for bad in ("soon", "-5", "0", "nan", "inf"):
        with pytest.raises(GatewayError) as caught:
            parse_hedge(bad)
        assert caught.value.code == "invalid_request" and "x-switchyard-hedge" in caught.value.message
    assert hints_from_headers({"x-switchyard-hedge": "off"}).hedge == Hedge(off=True)
    assert hints_from_headers({}).hedge is None


def test_the_route_hedge_table_is_validated() -> None:
    route = parse_config({"routes": {"r": {"deployments": ["a"], "hedge": {"delay_ms": 100}}}}).routes["r"]
    assert route.hedge == HedgeConfig(delay_ms=100)
    for bad, words in (
        ({"delayms": 100}, "unknown option"),
        ({"percentile": 100}, "less than 100"),
        ({"max_share": 0}, "greater than 0"),
        ({"max_hedges": 0}, "greater than or equal to 1"),
    ):
        with pytest.raises(ConfigError) as caught:
            parse_config({"routes": {"r": {"deployments": ["a"], "hedge": bad}}})
        assert "routes.r.hedge" in str(caught.value) and words in str(caught.value)


def test_the_native_body_field() -> None:
    from services.ingress.native import parse_body, to_request

    def parsed(hedge: object) -> invoke_pb2.InvokeRequest:
        raw = {"model": "r", "messages": [{"role": "user", "content": "hi"}], "hedge": hedge}
        return to_request(parse_body(orjson.dumps(raw)))

    assert parsed(False).hedge == invoke_pb2.HedgeChoice(off=True)
    assert parsed(True).HasField("hedge") and parsed(True).hedge == invoke_pb2.HedgeChoice()
    assert parsed({"delay_ms": 150}).hedge.delay_ms == 150
    without = to_request(parse_body(b'{"model": "r", "messages": [{"role": "user", "content": "hi"}]}'))
    assert not without.HasField("hedge")
    for bad in ({"delay_ms": 0}, {"delay": 5}, "soon"):
        with pytest.raises(GatewayError) as caught:
            parsed(bad)
        assert caught.value.code == "invalid_request"


def test_the_worker_races_an_armed_first_attempt_whichever_pool_serves_the_target() -> None:
    from services.providers.hedge_runner import hedge_target

    dispatch = invoke_pb2.Dispatch(hedge=invoke_pb2.HedgePlan(delay_ms=100, max_hedges=1))
    dispatch.chain.add(deployment_id="a", provider="p1")
    dispatch.chain.add(deployment_id="b", provider="p2")
    assert hedge_target(dispatch) == dispatch.chain[1]  # p2's pool runs it: a cross-pool racer
    assert not dispatch.rationale.hedge.skipped
    racer = invoke_pb2.Dispatch()
    racer.CopyFrom(dispatch)
    racer.hedge_for = "req_1"  # a racer never hedges again
    assert hedge_target(racer) is None
    dispatch.attempts.add(deployment_id="a")  # a failover's attempt is never hedged
    assert hedge_target(dispatch) is None
    assert hedge_target(invoke_pb2.Dispatch(chain=dispatch.chain)) is None  # not armed
    last = invoke_pb2.Dispatch(hedge=dispatch.hedge, chain=dispatch.chain[:1])
    assert hedge_target(last) is None  # no next deployment


def armed_dispatch() -> invoke_pb2.Dispatch:
    dispatch = invoke_pb2.Dispatch(
        reply_to="_INBOX.ingress.x.req_1",
        route="r",
        reserved_usd="0.004",
        reservation_id="res_1",
        hedge=invoke_pb2.HedgePlan(delay_ms=100, max_hedges=1, max_share=0.1),
        max_attempts=3,
    )
    dispatch.request.request_id = "req_1"
    dispatch.request.stream = True
    dispatch.request.messages.add(role=invoke_pb2.ROLE_USER).content.add(text="hi")
    dispatch.chain.add(deployment_id="a", provider="p1", model="a")
    dispatch.chain.add(deployment_id="b", provider="p2", model="b")
    dispatch.chain.add(deployment_id="c", provider="p3", model="c")
    dispatch.rationale.route = "r"
    return dispatch


def test_a_racer_in_another_pool_runs_one_target_into_the_racing_workers_inbox() -> None:
    from services.providers.hedge_remote import is_race_key, race_key, racer_dispatch

    dispatch = armed_dispatch()
    key = race_key("req_1", 1)
    assert key == "req_1~h1" and is_race_key(key) and not is_race_key("req_1")
    assert "." not in key  # one subject token: llm.cancel.<key> reaches it
    racer = racer_dispatch(dispatch, 1, key, "_INBOX.providers.abc")
    assert racer.request.request_id == key and racer.hedge_for == "req_1"
    assert [t.deployment_id for t in racer.chain] == ["b"] and racer.position == 0
    assert racer.reply_to == "_INBOX.providers.abc"  # never the client's inbox
    assert racer.max_attempts == 1  # no failover in the other pool
    assert racer.reserved_usd == "0.004"  # a racer's stream stops at the request's hold
    # Nothing that would make the other pool record, settle, hedge or reason about the request.
    assert not racer.HasField("hedge") and not racer.reservation_id and not racer.HasField("rationale")
    assert not racer.attempts
    # The original is untouched: the racing worker still answers the client under its own id.
    assert dispatch.request.request_id == "req_1" and dispatch.request.messages[0].content[0].text == "hi"
    assert racer.request.messages == dispatch.request.messages


def test_a_racers_frames_are_content_until_its_final_or_error() -> None:
    from services.providers.hedge_remote import frame_kind

    assert frame_kind(invoke_pb2.Reply(chunk=invoke_pb2.Chunk(delta_text="x"))) == "content"
    assert frame_kind(invoke_pb2.Reply(final=invoke_pb2.InvokeResponse())) == "final"
    assert frame_kind(invoke_pb2.Reply(error=invoke_pb2.Error(code="timeout"))) == "error"
    assert frame_kind(invoke_pb2.Reply()) == "content"  # a frame kind this build does not know


def test_a_racers_report_carries_its_answer_and_attempt_back_intact() -> None:
    from services.providers.adapters.base import Completed
    from services.providers.hedge_remote import completed_from, racer_dispatch, racer_report

    dispatch = racer_dispatch(armed_dispatch(), 1, "req_1~h1", "_INBOX.providers.abc")
    cat = catalog()
    completed = Completed(
        message=invoke_pb2.Message(role=invoke_pb2.ROLE_ASSISTANT),
        finish_reason="length",
        usage=invoke_pb2.Usage(prompt_tokens=12, completion_tokens=16, cached_tokens=4),
        http_status=200,
    )
    completed.message.content.add(text="quick")
    attempt = invoke_pb2.Attempt(deployment_id="b", http_status=201, latency_ms=12.5)
    report = racer_report(dispatch, cat.deployments["b"], completed, attempt)
    assert report.request_id == "req_1"  # the racing worker's request, not the racer's key
    assert report.deployment_id == "b" and list(report.attempts) == [attempt]
    assert not report.cost_usd  # the racing worker prices and bills it
    back = completed_from(invoke_pb2.InvokeResponse.FromString(report.SerializeToString()))
    assert back.message == completed.message and back.usage == completed.usage
    assert back.finish_reason == "length" and back.http_status == 201


def test_a_pool_that_does_not_take_the_racer_is_the_racers_error() -> None:
    from services.providers.hedge_remote import refused_error

    cat = catalog()
    handed = invoke_pb2.Dispatch()
    handed.attempts.add(deployment_id="b", error_code="overloaded", error_message="every worker was full")
    error = refused_error(handed, cat.deployments["b"])
    assert error.code == "overloaded" and error.message == "every worker was full"
    assert refused_error(invoke_pb2.Dispatch(), cat.deployments["b"]).code == "no_worker"


def test_a_worker_knows_the_other_pools_deployments_it_may_race_as_hedges() -> None:
    from services.providers.hedge_remote import hedge_partners

    cat = build_catalog(
        {
            "demo": {"enabled": False},
            "deployments": [
                {"id": "a", "provider": "p1", "model": "a"},
                {"id": "b", "provider": "p2", "model": "b"},
                {"id": "c", "provider": "p3", "model": "c"},
                {"id": "d", "provider": "p4", "model": "d"},
            ],
            "routes": {
                "hedged": {"deployments": ["a", "b"], "hedge": {"delay_ms": 100}},
                "plain": {"deployments": ["a", "c"]},  # no policy: nothing to prepare for
                "acts": {"deployments": ["a", "d"], "hedge": {"delay_ms": 100}, "side_effects": True},
            },
        },
        {},
    )
    assert [d.id for d in hedge_partners(cat, ["p1"])] == ["b"]
    assert [d.id for d in hedge_partners(cat, ["p2"])] == ["a"]
    assert hedge_partners(cat, ["p3"]) == []  # not on a hedged route
    assert hedge_partners(cat, ["p1", "p2"]) == []  # serves both: nothing of another pool
