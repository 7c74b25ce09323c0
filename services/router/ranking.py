"""Ranking candidate deployments into a fallback chain, with the rationale for the choice.

Pure functions: no I/O. The spine ranks in configured order; scoring by latency, cost and
quality replaces `rank` without touching the wiring in main.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from switchyard.catalog import Deployment
from switchyard.pricing import cost_usd
from switchyard.v1 import invoke_pb2

DEFAULT_EXPECTED_OUTPUT_TOKENS = 256


@dataclass(frozen=True)
class Ranked:
    chain: list[Deployment]
    rationale: invoke_pb2.Rationale


def rank(
    route: str,
    candidates: Sequence[Deployment],
    prompt_tokens: int,
    max_tokens: int,
) -> Ranked:
    expected_output = min(max_tokens or DEFAULT_EXPECTED_OUTPUT_TOKENS, DEFAULT_EXPECTED_OUTPUT_TOKENS)
    rationale = invoke_pb2.Rationale(route=route, strategy="configured-order")
    for dep in candidates:
        rationale.candidates.add(
            deployment_id=dep.id,
            provider=dep.provider,
            model=dep.model,
            est_cost_usd=float(cost_usd(dep.price, prompt_tokens, expected_output)),
            quality=dep.quality,
            eligible=True,
        )
    chain = list(candidates)
    rationale.winner = chain[0].id
    rationale.reason = "first configured deployment of the route"
    return Ranked(chain=chain, rationale=rationale)
