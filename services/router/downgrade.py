"""Budget-aware downgrade (docs/routing.md): a route whose policy says so ranks its deployments
toward cost once one of the request's scopes has used `at_pct` of a cap, so work keeps flowing
on cheaper deployments instead of being refused at 100 %. Pure.

The router learns how full each budgeted scope is from the budget leader's `budget.pressure`
fan-out (services/budget/pressure.py); a reading older than STALE_S is not used (the leader
stopped publishing: no downgrade rather than one on old numbers). The rationale names the
policy, the scope and the deployment the route would have chosen without it, with its
estimated cost, so the ledger can say what the downgrade saved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from switchyard.catalog import Route
from switchyard.tenancy import request_scopes
from switchyard.v1 import invoke_pb2

from .ranking import Ranked

STALE_S = 5.0


@dataclass(frozen=True)
class Trigger:
    """Why a request is downgraded: its route's threshold and the scope past it."""

    route: str
    at_pct: float
    strategy: str
    scope: str
    used_pct: float
    period: str

    def text(self) -> str:
        return (
            f"route {self.route} downgrades to {self.strategy} at {self.at_pct:g} % of a cap: "
            f"{self.scope} has {self.used_pct:.1f} % of its {self.period} cap spent or held"
        )


class PressureView:
    """The latest `budget.pressure` reading."""

    def __init__(self) -> None:
        self.scopes: dict[str, dict[str, Any]] = {}
        self.received_s = float("-inf")

    def update(self, body: dict[str, Any], now_s: float) -> None:
        scopes = body.get("scopes")
        if isinstance(scopes, dict):
            self.scopes = scopes
            self.received_s = now_s

    def triggered(
        self, route: Route | None, request: invoke_pb2.InvokeRequest, now_s: float
    ) -> Trigger | None:
        """The request's fullest scope past its route's threshold, or None."""
        policy = route.downgrade if route is not None else None
        if policy is None or now_s - self.received_s > STALE_S:
            return None
        best: Trigger | None = None
        for scope in request_scopes(request.project_id, request.agent_id, request.key_id):
            reading = self.scopes.get(scope)
            if not isinstance(reading, dict):
                continue
            used = float(reading.get("used_pct") or 0)
            if used >= policy.at_pct and (best is None or used > best.used_pct):
                best = Trigger(
                    route.name if route else "",
                    policy.at_pct,
                    policy.strategy,
                    scope,
                    used,
                    str(reading.get("period", "")),
                )
        return best


def cheaper(ranked: Ranked, undowngraded: Ranked) -> Ranked | None:
    """The downgraded ranking keeping only deployments estimated cheaper than the undowngraded
    winner: a downgraded request never fails over to a dearer one (its budget hold, the worst
    case over its chain, then fits where the cap is nearly spent). None: nothing is cheaper."""
    costs = {c.deployment_id: c.est_cost_usd for c in ranked.rationale.candidates}
    ceiling = costs.get(undowngraded.rationale.winner, 0.0)
    chain = [d for d in ranked.chain if costs.get(d.id, ceiling) < ceiling]
    if not chain or chain[0].id == undowngraded.rationale.winner:
        return None
    del ranked.rationale.chain[:]
    ranked.rationale.chain.extend(d.id for d in chain)
    ranked.rationale.winner = chain[0].id
    return Ranked(chain, ranked.rationale, ranked.probe if ranked.probe in {d.id for d in chain} else "")


def note(rationale: invoke_pb2.Rationale, trigger: Trigger, undowngraded: invoke_pb2.Rationale) -> None:
    """Write the downgrade into the rationale that was used, with the winner it replaced."""
    rationale.downgrade = trigger.text()
    rationale.undowngraded_winner = undowngraded.winner
    for candidate in undowngraded.candidates:
        if candidate.deployment_id == undowngraded.winner:
            rationale.undowngraded_est_cost_usd = candidate.est_cost_usd
    rationale.reason = (
        f"{rationale.reason}; downgraded: {trigger.text()}" if rationale.reason else trigger.text()
    )
