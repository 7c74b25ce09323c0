"""Whether a request may hedge, and after how long: the router's half of hedged requests. Pure.

A hedge is a second attempt started on the next deployment of the chain when the first has not
produced its first token (a plain request: its answer) after a delay; the first to deliver wins
and the other is cancelled (docs/routing.md, "Hedged requests"). The router arms it; the worker
that runs the dispatch fires it (services/providers/hedge_runner.py), within its share cap.

The router decides here from what it alone knows: the route's policy and the request's own
choice, whether the route has side effects, the first deployment's observed time to first token
(its percentile is the delay), and the hedge target's provider-quota headroom. Whether the
budget covers both attempts is the authority's answer to a hold sized for both
(reservation.hedged_holds); when it refuses that, the router asks again without the hedge.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from switchyard.catalog import Deployment, Route
from switchyard.config import HedgeConfig
from switchyard.v1 import invoke_pb2

from .quota import NEAR_QUOTA, QuotaReading

# The policy of a route that has none, for a request that asks to hedge on it.
DEFAULT_POLICY = HedgeConfig()

# Why an armed hedge was dropped after the authority's answer.
BUDGET_SKIP = "the budget cannot cover both attempts"


@dataclass(frozen=True)
class Observed:
    """The first deployment's recent speed: the policy's percentile of its time to first token
    (whole-call latency for plain requests) over `samples` successful calls."""

    percentile_ms: float
    samples: int


@dataclass(frozen=True)
class Hedge:
    """The router's decision: `plan` is None when the request will not hedge; `note` goes in
    the rationale either way (left empty when neither the route nor the request mentions it)."""

    plan: invoke_pb2.HedgePlan | None
    note: invoke_pb2.HedgeNote | None


NO_HEDGE = Hedge(None, None)


def policy_for(route: Route | None, request: invoke_pb2.InvokeRequest) -> HedgeConfig | None:
    """The route's policy; the default policy when the request asks for a hedge on a route
    without one; None when neither asks."""
    if route is not None and route.hedge is not None:
        return route.hedge
    if request.HasField("hedge") and not request.hedge.off:
        return DEFAULT_POLICY
    return None


def plan_hedge(
    route: Route | None,
    request: invoke_pb2.InvokeRequest,
    chain: Sequence[Deployment],
    observe: Callable[[str, float], Observed],
    quota: Callable[[str], QuotaReading],
) -> Hedge:
    """Arm a hedge or say why not. `observe(deployment_id, percentile)` and `quota(deployment_id)`
    read the router's health book and quota view (the caller binds the clock)."""
    policy = policy_for(route, request)
    if policy is None:
        return NO_HEDGE
    note = invoke_pb2.HedgeNote()
    if request.HasField("hedge") and request.hedge.off:
        note.skipped = "the request turned hedging off"
        return Hedge(None, note)
    if route is not None and route.side_effects:
        note.skipped = f"route {route.name} has side effects: a request is never run twice"
        return Hedge(None, note)
    if len(chain) < 2:
        note.skipped = "no second deployment in the chain"
        return Hedge(None, note)
    hedges = min(policy.max_hedges, len(chain) - 1)
    for target in chain[1 : 1 + hedges]:
        reading = quota(target.id)
        if reading.wait_s > 0 or reading.headroom < NEAR_QUOTA:
            note.skipped = f"{target.id} is near its provider quota (headroom {reading.headroom:.2f})"
            return Hedge(None, note)
    delay_ms, source = hedge_delay(policy, request, chain[0].id, observe)
    note.armed = True
    note.delay_ms = delay_ms
    note.delay_source = source
    plan = invoke_pb2.HedgePlan(
        delay_ms=delay_ms, max_hedges=hedges, max_share=policy.max_share, window_ms=policy.window_s * 1000
    )
    return Hedge(plan, note)


def hedge_delay(
    policy: HedgeConfig,
    request: invoke_pb2.InvokeRequest,
    first: str,
    observe: Callable[[str, float], Observed],
) -> tuple[float, str]:
    """The delay and where it came from: the request's, else the route's fixed one, else the
    percentile of the first deployment's observed speed (at least `min_delay_ms`, which also
    stands in until `min_samples` were observed)."""
    if request.HasField("hedge") and request.hedge.delay_ms > 0:
        return request.hedge.delay_ms, "request"
    if policy.delay_ms > 0:
        return policy.delay_ms, "fixed"
    measure = "ttft" if request.stream else "latency"
    observed = observe(first, policy.percentile)
    name = f"p{policy.percentile:g} {measure} of {first}"
    if observed.samples < policy.min_samples:
        return policy.min_delay_ms, f"min_delay_ms ({observed.samples} samples of {first})"
    if observed.percentile_ms < policy.min_delay_ms:
        return policy.min_delay_ms, f"min_delay_ms ({name} is {observed.percentile_ms:.0f} ms)"
    return observed.percentile_ms, name


def disarm(hedge: Hedge, reason: str) -> Hedge:
    """The same decision with the hedge dropped for `reason`."""
    note = invoke_pb2.HedgeNote(skipped=reason)
    if hedge.note is not None:
        note.delay_ms = hedge.note.delay_ms
        note.delay_source = hedge.note.delay_source
    return Hedge(None, note)
