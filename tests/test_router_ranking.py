"""Scoring and ranking: normalisation, presets, explicit weights, health, exclusion, probes. Pure."""

from __future__ import annotations

import pytest

from services.router.health import BreakerState, HealthView
from services.router.ranking import CandidateState, candidate_state, expected_output_tokens, rank
from services.router.strategy import PRESETS, Weights, choose_weights
from switchyard.catalog import Deployment, Route, demo_deployments
from switchyard.errors import GatewayError
from switchyard.pricing import Price
from switchyard.v1 import invoke_pb2

FAST, SMART = demo_deployments()  # cheap, quality .55 / 25x the price, quality .9


def ranked(candidates, states=None, weights: Weights = PRESETS["balanced"], **kw):
    return rank(
        "r",
        candidates,
        states or {},
        weights,
        strategy=kw.pop("strategy", "test"),
        prompt_tokens=kw.pop("prompt_tokens", 100),
        expected_output=kw.pop("expected_output", 256),
        **kw,
    )


def measured(latency_ms: float, **kw) -> CandidateState:
    return CandidateState(latency_ms=latency_ms, measured=True, **kw)


def by_id(result, deployment_id: str) -> invoke_pb2.CandidateScore:
    return next(c for c in result.rationale.candidates if c.deployment_id == deployment_id)


def test_scores_are_ratios_to_the_best_candidate_and_the_total_is_the_weighted_sum() -> None:
    states = {FAST.id: measured(100.0), SMART.id: measured(300.0)}
    result = ranked([FAST, SMART], states, Weights.of(0.5, 0.25, 0.25))
    fast, smart = by_id(result, FAST.id), by_id(result, SMART.id)
    assert (fast.latency_score, fast.cost_score) == (1.0, 1.0)
    assert smart.latency_score == pytest.approx(1 / 3)
    assert smart.cost_score == pytest.approx(fast.est_cost_usd / smart.est_cost_usd)
    assert (smart.quality_score, fast.quality_score) == (1.0, pytest.approx(0.55 / 0.9))
    assert fast.total == pytest.approx(0.5 + 0.25 + 0.25 * 0.55 / 0.9)
    assert smart.total == pytest.approx(0.5 / 3 + 0.25 * smart.cost_score + 0.25)
    assert result.rationale.winner == FAST.id
    assert list(result.rationale.chain) == [FAST.id, SMART.id]
    assert result.rationale.weight_latency == 0.5
    assert "latency" in result.rationale.reason


@pytest.mark.parametrize(
    ("preset", "winner"),
    [("balanced", "demo/fast"), ("fastest", "demo/fast"), ("cheapest", "demo/fast"), ("best", "demo/smart")],
)
def test_presets_pick_the_documented_winner_on_the_demo_pair(preset: str, winner: str) -> None:
    # docs/routing.md works this example: smart is 3x slower and 25x pricier but better.
    states = {FAST.id: measured(20.0), SMART.id: measured(60.0)}
    assert ranked([FAST, SMART], states, PRESETS[preset]).rationale.winner == winner


def test_explicit_weights_change_the_winner() -> None:
    states = {FAST.id: measured(20.0), SMART.id: measured(60.0)}
    assert ranked([FAST, SMART], states, Weights.of(1, 0, 0)).rationale.winner == FAST.id
    assert ranked([FAST, SMART], states, Weights.of(0, 0, 1)).rationale.winner == SMART.id
    # latency .2, quality .8: smart's quality (1 vs .61) outweighs its latency (1/3 vs 1).
    assert ranked([FAST, SMART], states, Weights.of(0.2, 0, 0.8)).rationale.winner == SMART.id


def test_in_flight_load_inflates_latency_and_moves_traffic_to_the_idle_candidate() -> None:
    a = Deployment(id="a", provider="p", model="a", adapter="demo")
    b = Deployment(id="b", provider="p", model="b", adapter="demo")
    idle = {"a": measured(100.0), "b": measured(150.0)}
    assert ranked([a, b], idle, PRESETS["fastest"]).rationale.winner == "a"
    busy = {"a": measured(100.0, inflight=2), "b": measured(150.0)}
    result = ranked([a, b], busy, PRESETS["fastest"])
    assert result.rationale.winner == "b"
    assert by_id(result, "a").latency_ms == 300.0
    assert by_id(result, "a").inflight == 2


def test_errors_scale_the_total_down_whatever_the_weights() -> None:
    a = Deployment(id="a", provider="p", model="a", adapter="demo")
    b = Deployment(id="b", provider="p", model="b", adapter="demo")
    states = {"a": measured(100.0, error_rate=0.6), "b": measured(120.0)}
    result = ranked([a, b], states, PRESETS["fastest"])
    assert result.rationale.winner == "b"
    assert by_id(result, "a").total == pytest.approx(1.0 * 0.4)
    assert "health" in result.rationale.reason


def test_an_unmeasured_candidate_is_tried_on_a_tie_so_it_gets_measured() -> None:
    a = Deployment(id="a", provider="p", model="a", adapter="demo")
    b = Deployment(id="b", provider="p", model="b", adapter="demo")
    result = ranked([a, b], {"a": measured(5.0)}, PRESETS["fastest"], latency_floor_ms=10.0)
    assert result.rationale.winner == "b"
    assert by_id(result, "b").latency_source == "unmeasured"
    assert by_id(result, "a").latency_source == "ewma"


def test_excluded_candidates_are_recorded_but_not_in_the_chain() -> None:
    states = {FAST.id: measured(10.0, breaker="open", blocked_reason="circuit_open", blocked_for_s=3.0)}
    result = ranked([FAST, SMART], states)
    assert list(result.rationale.chain) == [SMART.id]
    fast = by_id(result, FAST.id)
    assert not fast.eligible and fast.excluded_reason == "circuit_open" and fast.breaker == "open"
    assert "only eligible" in result.rationale.reason


def test_no_eligible_candidate_is_a_503_with_the_earliest_retry() -> None:
    states = {
        FAST.id: measured(10.0, blocked_reason="circuit_open", blocked_for_s=4.0),
        SMART.id: measured(10.0, blocked_reason="retry_after", blocked_for_s=2.5),
    }
    with pytest.raises(GatewayError) as caught:
        ranked([FAST, SMART], states)
    assert caught.value.code == "unavailable" and caught.value.http_status == 503
    assert caught.value.retry_after_s == 2.5
    assert "circuit_open" in caught.value.message and "retry_after" in caught.value.message


def test_a_half_open_candidate_gets_one_trial_request_first() -> None:
    view = HealthView(50.0, True, 0.5, BreakerState.HALF_OPEN, "", 0.0)
    probe = candidate_state(view, inflight=0, probes_in_flight=0, probe_limit=1)
    assert probe.probe and not probe.blocked_reason
    states = {FAST.id: measured(10.0), SMART.id: probe}
    result = ranked([FAST, SMART], states)
    assert result.probe == SMART.id
    assert list(result.rationale.chain) == [SMART.id, FAST.id]  # its failure fails over at once
    assert "probe" in result.rationale.reason
    busy = candidate_state(view, inflight=1, probes_in_flight=1, probe_limit=1)
    assert busy.blocked_reason == "probe_in_flight"
    assert list(ranked([FAST, SMART], {SMART.id: busy}).rationale.chain) == [FAST.id]


def test_the_chain_is_cut_to_the_retry_budget_and_the_rationale_says_what_was_estimated() -> None:
    deps = [Deployment(id=f"d{i}", provider="p", model=f"m{i}", adapter="demo") for i in range(5)]
    result = ranked(deps, max_chain=3, rule="cheap-tasks", prompt_tokens=42, expected_output=7)
    assert len(result.chain) == 3 and len(result.rationale.candidates) == 5
    assert result.rationale.rule == "cheap-tasks"
    assert (result.rationale.prompt_tokens_est, result.rationale.expected_output_tokens) == (42, 7)


def test_a_free_deployment_is_the_cheapest() -> None:
    free = Deployment(id="free", provider="p", model="f", adapter="demo", price=Price())
    result = ranked([FAST, free], weights=PRESETS["cheapest"])
    assert by_id(result, "free").cost_score == 1.0 and by_id(result, FAST.id).cost_score == 0.0
    assert result.rationale.winner == "free"


def test_expected_output_is_capped_by_max_tokens() -> None:
    assert expected_output_tokens(0) == 256
    assert expected_output_tokens(10) == 10
    assert expected_output_tokens(5000, default=300) == 300


def test_request_strategy_beats_the_route_which_beats_balanced() -> None:
    route = Route("r", ("a",), strategy="fastest")
    weighted = Route("w", ("a",), strategy="balanced", weights={"cost": 3, "quality": 1})
    assert choose_weights(None, None) == ("balanced", PRESETS["balanced"])
    assert choose_weights(None, route) == ("fastest", PRESETS["fastest"])
    assert choose_weights(None, weighted) == ("route:w", Weights(0, 0.75, 0.25))
    assert choose_weights(invoke_pb2.Strategy(preset="best"), route) == ("best", PRESETS["best"])
    explicit = invoke_pb2.Strategy(explicit=True, latency=2, cost=1, quality=1)
    assert choose_weights(explicit, weighted) == ("explicit", Weights(0.5, 0.25, 0.25))
    with pytest.raises(GatewayError, match="unknown strategy"):
        choose_weights(invoke_pb2.Strategy(preset="yolo"), route)
    with pytest.raises(GatewayError, match="all be zero"):
        choose_weights(invoke_pb2.Strategy(explicit=True), route)
