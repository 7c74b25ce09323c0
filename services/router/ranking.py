"""Ranking candidate deployments into a fallback chain, with the rationale for the choice.

Pure functions: no I/O, no clock. For each eligible candidate:

    latency_est = max(peak_ewma_ms, latency_floor_ms) * (1 + in_flight)
    est_cost    = prompt_tokens * input_price + expected_output * output_price
    latency_score = min(latency_est) / latency_est      (1 = the fastest candidate)
    cost_score    = min(est_cost) / est_cost            (1 = the cheapest; a free one beats all)
    quality_score = quality / max(quality)              (1 = the best)
    total = (w_latency * latency_score + w_cost * cost_score + w_quality * quality_score)
            * (1 - error_rate)

Candidates whose breaker is open, that asked us to back off (Retry-After / 429), or that are
half-open with a trial request already in flight are not eligible. A half-open candidate that
may take a trial request goes first (its failure fails over to the rest of the chain).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from switchyard.catalog import Deployment
from switchyard.errors import GatewayError
from switchyard.pricing import cost_usd
from switchyard.v1 import invoke_pb2

from .health import BreakerState, HealthView
from .strategy import Weights

DEFAULT_EXPECTED_OUTPUT_TOKENS = 256
COMPONENTS = ("latency", "cost", "quality")


@dataclass(frozen=True)
class CandidateState:
    """What the router knows about one candidate right now."""

    latency_ms: float = 0.0  # Peak EWMA (TTFT for streams); 0 when unmeasured or fully decayed
    measured: bool = False
    inflight: int = 0
    error_rate: float = 0.0
    breaker: str = BreakerState.CLOSED.value
    blocked_reason: str = ""
    blocked_for_s: float = 0.0
    probe: bool = False  # half-open, and this request may be its trial


def candidate_state(
    view: HealthView, inflight: int, probes_in_flight: int, probe_limit: int
) -> CandidateState:
    blocked, blocked_for, probe = view.blocked_reason, view.blocked_for_s, False
    if not blocked and view.breaker is BreakerState.HALF_OPEN:
        if probes_in_flight >= probe_limit:
            blocked, blocked_for = "probe_in_flight", 1.0
        else:
            probe = True
    return CandidateState(
        latency_ms=view.latency_ms,
        measured=view.measured,
        inflight=inflight,
        error_rate=view.error_rate,
        breaker=view.breaker.value,
        blocked_reason=blocked,
        blocked_for_s=blocked_for,
        probe=probe,
    )


@dataclass(frozen=True)
class Ranked:
    chain: list[Deployment]
    rationale: invoke_pb2.Rationale
    probe: str = ""  # the deployment this request probes (half-open breaker), if any


def expected_output_tokens(max_tokens: int, default: int = DEFAULT_EXPECTED_OUTPUT_TOKENS) -> int:
    """Output tokens assumed for the cost estimate: the typical reply, capped by max_tokens."""
    return min(max_tokens or default, default)


def _ratio(best: float, value: float) -> float:
    """best/value for lower-is-better quantities, with 0/0 = 1."""
    if value <= 0:
        return 1.0
    return best / value


def rank(
    route: str,
    candidates: Sequence[Deployment],
    states: Mapping[str, CandidateState],
    weights: Weights,
    *,
    strategy: str,
    prompt_tokens: int,
    expected_output: int,
    latency_floor_ms: float = 10.0,
    max_chain: int = 0,
    rule: str = "",
) -> Ranked:
    """Score and order `candidates`; raise GatewayError(unavailable) when none is eligible."""
    rationale = invoke_pb2.Rationale(
        route=route,
        rule=rule,
        strategy=strategy,
        weight_latency=weights.latency,
        weight_cost=weights.cost,
        weight_quality=weights.quality,
        prompt_tokens_est=prompt_tokens,
        expected_output_tokens=expected_output,
    )
    unknown = CandidateState()
    scores: list[invoke_pb2.CandidateScore] = []
    for dep in candidates:
        state = states.get(dep.id, unknown)
        scores.append(
            invoke_pb2.CandidateScore(
                deployment_id=dep.id,
                provider=dep.provider,
                model=dep.model,
                latency_ms=max(state.latency_ms, latency_floor_ms) * (1 + state.inflight),
                est_cost_usd=float(cost_usd(dep.price, prompt_tokens, expected_output)),
                quality=dep.quality,
                eligible=not state.blocked_reason,
                excluded_reason=state.blocked_reason,
                error_rate=state.error_rate,
                inflight=state.inflight,
                breaker=state.breaker,
                latency_source="ewma" if state.measured else "unmeasured",
            )
        )
    eligible = [i for i, s in enumerate(scores) if s.eligible]
    if not eligible:
        rationale.candidates.extend(scores)
        blocked = {dep.id: states.get(dep.id, unknown) for dep in candidates}
        detail = ", ".join(f"{d}: {s.blocked_reason} for {s.blocked_for_s:.1f} s" for d, s in blocked.items())
        raise GatewayError(
            "unavailable",
            f"no deployment of {route!r} is available right now ({detail})",
            retry_after_s=max(min(s.blocked_for_s for s in blocked.values()), 1.0),
        )

    best_latency = min(scores[i].latency_ms for i in eligible)
    best_cost = min(scores[i].est_cost_usd for i in eligible)
    best_quality = max(scores[i].quality for i in eligible)
    for i in eligible:
        s = scores[i]
        s.latency_score = _ratio(best_latency, s.latency_ms)
        s.cost_score = _ratio(best_cost, s.est_cost_usd)
        s.quality_score = s.quality / best_quality if best_quality > 0 else 1.0
        weighted = (
            weights.latency * s.latency_score
            + weights.cost * s.cost_score
            + weights.quality * s.quality_score
        )
        s.total = weighted * (1.0 - min(max(s.error_rate, 0.0), 1.0))

    def order(i: int) -> tuple[bool, float, bool, int]:
        # Trial requests first; then by score; on a tie an unmeasured candidate goes first so
        # it gets measured; then configured order.
        state = states.get(candidates[i].id, unknown)
        return (not state.probe, -scores[i].total, state.measured, i)

    ordered = sorted(eligible, key=order)
    if max_chain > 0:
        ordered = ordered[:max_chain]
    chain = [candidates[i] for i in ordered]
    rationale.candidates.extend(scores)
    rationale.chain.extend(d.id for d in chain)
    rationale.winner = chain[0].id
    probe = chain[0].id if states.get(chain[0].id, unknown).probe else ""
    rationale.reason = _reason(scores, ordered, weights, probe)
    return Ranked(chain=chain, rationale=rationale, probe=probe)


def _reason(scores: list[invoke_pb2.CandidateScore], ordered: list[int], weights: Weights, probe: str) -> str:
    winner = scores[ordered[0]]
    if probe:
        return f"half-open probe: a trial request to {probe} to see whether it has recovered"
    if len(ordered) == 1:
        excluded = [s.deployment_id for s in scores if not s.eligible]
        return "the only eligible candidate" + (f" ({', '.join(excluded)} excluded)" if excluded else "")
    runner = scores[ordered[1]]
    if winner.total == runner.total:
        return f"tied with {runner.deployment_id} at {winner.total:.3f}; taken first to measure it or by configured order"
    gains = {
        "latency": weights.latency * (winner.latency_score - runner.latency_score),
        "cost": weights.cost * (winner.cost_score - runner.cost_score),
        "quality": weights.quality * (winner.quality_score - runner.quality_score),
    }
    lead = max(gains, key=lambda k: gains[k])
    why = f"mostly on {lead}" if gains[lead] > 0 else "on health (error rate)"
    return f"highest score {winner.total:.3f} vs {runner.deployment_id} {runner.total:.3f}, ahead {why}"
