"""Ranking candidate deployments into a fallback chain, with the rationale for the choice.

Pure functions: no I/O, no clock. For each eligible candidate:

    latency_est = max(peak_ewma_ms, latency_floor_ms) * (1 + in_flight)
    est_cost    = prompt_tokens * input_price + expected_output * output_price
    latency_score = min(latency_est) / latency_est      (1 = the fastest candidate)
    cost_score    = min(est_cost) / est_cost            (1 = the cheapest; a free one beats all)
    quality_score = quality / max(quality)              (1 = the best)
    total = (w_latency * latency_score + w_cost * cost_score + w_quality * quality_score)
            * (1 - error_rate) * quota_factor(quota_headroom)

A candidate at its provider quota (per the authority's latest `quota.state`) stays in the chain
but goes after every other one; the authority has the final word (docs/quotas.md).

Candidates whose breaker is open, that asked us to back off (Retry-After / 429), or that are
half-open with a trial request already in flight are not eligible. A half-open candidate that
may take a trial request goes first (its failure fails over to the rest of the chain).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from switchyard import units
from switchyard.catalog import Deployment
from switchyard.errors import ErrorCode, GatewayError
from switchyard.pricing import Price
from switchyard.v1 import budget_pb2, invoke_pb2

from .health import BreakerState, HealthView
from .quota import QuotaReading, quota_factor
from .strategy import Weights

DEFAULT_EXPECTED_OUTPUT_TOKENS = 256
COMPONENTS = ("latency", "cost", "quality")


@dataclass(slots=True)
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
    quota_headroom: float = 1.0  # free share of its tightest provider limit (1: none or untouched)
    quota_wait_s: float = 0.0  # > 0: at its provider quota for this long

    @property
    def at_quota(self) -> bool:
        return self.quota_wait_s > 0


def candidate_state(
    view: HealthView,
    inflight: int,
    probes_in_flight: int,
    probe_limit: int,
    quota: QuotaReading | None = None,
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
        quota_headroom=quota.headroom if quota else 1.0,
        quota_wait_s=quota.wait_s if quota else 0.0,
    )


@dataclass(frozen=True)
class Ranked:
    chain: list[Deployment]
    rationale: invoke_pb2.Rationale
    probe: str = ""  # the deployment this request probes (half-open breaker), if any


def expected_output_tokens(max_tokens: int, default: int = DEFAULT_EXPECTED_OUTPUT_TOKENS) -> int:
    """Output tokens assumed for the cost estimate: the typical reply, capped by max_tokens."""
    return min(max_tokens or default, default)


@functools.lru_cache(maxsize=1024)
def _per_token(price: Price) -> tuple[float, float]:
    """USD per input and output token as floats: a ranking estimate, not a bill (that is Decimal)."""
    return float(price.input) / 1e6, float(price.output) / 1e6


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
    # Plain floats while scoring (protobuf attribute access is slow); messages built once at the end.
    rows = [
        _Row(dep, states.get(dep.id, unknown), latency_floor_ms, prompt_tokens, expected_output)
        for dep in candidates
    ]
    eligible = [row for row in rows if not row.state.blocked_reason]
    if not eligible:
        rationale.candidates.extend(row.message() for row in rows)
        detail = ", ".join(
            f"{row.dep.id}: {row.state.blocked_reason} for {row.state.blocked_for_s:.1f} s" for row in rows
        )
        raise GatewayError(
            ErrorCode.UNAVAILABLE,
            f"no deployment of {route!r} is available right now ({detail})",
            retry_after_s=max(min(row.state.blocked_for_s for row in rows), 1.0),
        )

    best_latency = min(row.latency_ms for row in eligible)
    best_cost = min(row.cost for row in eligible)
    best_quality = max(row.dep.quality for row in eligible)
    for row in eligible:
        row.scores = (
            _ratio(best_latency, row.latency_ms),
            _ratio(best_cost, row.cost),
            row.dep.quality / best_quality if best_quality > 0 else 1.0,
        )
        weighted = (
            weights.latency * row.scores[0] + weights.cost * row.scores[1] + weights.quality * row.scores[2]
        )
        health = 1.0 - min(max(row.state.error_rate, 0.0), 1.0)
        row.total = weighted * health * quota_factor(row.state.quota_headroom)

    # Trial requests first; candidates at their quota last; then by score; on a tie an unmeasured
    # candidate goes first so it gets measured; then configured order (sorted() is stable).
    ordered = sorted(
        eligible,
        key=lambda row: (not row.state.probe, row.state.at_quota, -row.total, row.state.measured),
    )
    if max_chain > 0:
        ordered = ordered[:max_chain]
    chain = [row.dep for row in ordered]
    rationale.candidates.extend(row.message() for row in rows)
    rationale.chain.extend(d.id for d in chain)
    rationale.winner = chain[0].id
    probe = chain[0].id if ordered[0].state.probe else ""
    rationale.reason = _reason(rows, ordered, weights, probe)
    return Ranked(chain=chain, rationale=rationale, probe=probe)


class _Row:
    """One candidate while it is being scored."""

    __slots__ = ("cost", "dep", "latency_ms", "scores", "state", "total")

    def __init__(
        self,
        dep: Deployment,
        state: CandidateState,
        floor_ms: float,
        prompt_tokens: int,
        expected_output: int,
    ) -> None:
        self.dep = dep
        self.state = state
        self.latency_ms = max(state.latency_ms, floor_ms) * (1 + state.inflight)
        input_price, output_price = _per_token(dep.price)
        self.cost = prompt_tokens * input_price + expected_output * output_price
        self.scores = (0.0, 0.0, 0.0)
        self.total = 0.0

    def message(self) -> invoke_pb2.CandidateScore:
        state = self.state
        return invoke_pb2.CandidateScore(
            deployment_id=self.dep.id,
            provider=self.dep.provider,
            model=self.dep.model,
            latency_ms=self.latency_ms,
            est_cost_usd=self.cost,
            quality=self.dep.quality,
            latency_score=self.scores[0],
            cost_score=self.scores[1],
            quality_score=self.scores[2],
            total=self.total,
            eligible=not state.blocked_reason,
            excluded_reason=state.blocked_reason,
            error_rate=state.error_rate,
            inflight=state.inflight,
            breaker=state.breaker,
            latency_source="ewma" if state.measured else "unmeasured",
            quota_headroom=state.quota_headroom,
            quota_wait_ms=units.ms(state.quota_wait_s),
        )


def _reason(rows: list[_Row], ordered: list[_Row], weights: Weights, probe: str) -> str:
    winner = ordered[0]
    if probe:
        return f"half-open probe: a trial request to {probe} to see whether it has recovered"
    if len(ordered) == 1:
        excluded = [row.dep.id for row in rows if row.state.blocked_reason]
        return "the only eligible candidate" + (f" ({', '.join(excluded)} excluded)" if excluded else "")
    runner = ordered[1]
    if winner.total == runner.total:
        return f"tied with {runner.dep.id} at {winner.total:.3f}; taken first to measure it or by configured order"
    gains = {
        name: weight * (won - lost)
        for name, weight, won, lost in zip(
            COMPONENTS,
            (weights.latency, weights.cost, weights.quality),
            winner.scores,
            runner.scores,
            strict=True,
        )
    }
    lead = max(gains, key=lambda k: gains[k])
    if runner.state.quota_headroom < winner.state.quota_headroom and gains[lead] <= 0:
        return f"highest score {winner.total:.3f} vs {runner.dep.id} {runner.total:.3f}, ahead on provider quota headroom"
    why = f"mostly on {lead}" if gains[lead] > 0 else "on health (error rate)"
    return f"highest score {winner.total:.3f} vs {runner.dep.id} {runner.total:.3f}, ahead {why}"


def quota_chain(ranked: Ranked, decision: budget_pb2.Decision, max_chain: int = 0) -> list[Deployment]:
    """The fallback chain after the budget authority's quota decision: the deployment it
    reserved on first, the ones it found at their provider quota dropped (failing over to them
    would only draw 429s), the rest in rank order, at most `max_chain` long. The rationale is
    updated to match."""
    chosen = decision.deployment_id or ranked.chain[0].id
    at_quota = set(decision.at_quota)
    first = [d for d in ranked.chain if d.id == chosen] or ranked.chain[:1]
    chain = first + [d for d in ranked.chain if d.id != first[0].id and d.id not in at_quota]
    if max_chain > 0:
        chain = chain[:max_chain]
    rationale = ranked.rationale
    for candidate in rationale.candidates:
        if candidate.deployment_id in at_quota:
            candidate.eligible = False
            candidate.excluded_reason = "quota"
            candidate.quota_headroom = 0.0
    del rationale.chain[:]
    rationale.chain.extend(d.id for d in chain)
    if rationale.winner != chain[0].id:
        skipped = ", ".join(sorted(at_quota))
        rationale.reason = (
            f"{skipped} at provider quota; {chain[0].id} is the best with headroom ({rationale.reason})"
        )
        rationale.winner = chain[0].id
    return chain
