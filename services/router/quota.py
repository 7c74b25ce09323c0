"""What the router knows of provider quotas, from the budget authority's `quota.state`. Pure.

The authority decides (it reserves on the first candidate with headroom); this view only lets
the ranking spread traffic before a deployment reaches its quota: a candidate near its quota
scores lower, one at its quota goes to the end of the chain (docs/quotas.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from switchyard import units
from switchyard.v1 import budget_pb2

# Below this free share of its tightest limit a deployment's score is scaled down.
NEAR_QUOTA = 0.2
# The score factor at zero headroom (a deployment at quota keeps this much, and goes last).
MIN_FACTOR = 0.25
# A state older than this is ignored (the authority stopped publishing: no quotas, or a takeover).
STALE_AFTER_S = 5.0


@dataclass(frozen=True)
class QuotaReading:
    headroom: float = 1.0  # 0..1, 1 = no limits or untouched
    wait_s: float = 0.0  # > 0: at quota, free in this many seconds


def quota_factor(headroom: float) -> float:
    """1 with at least NEAR_QUOTA of every limit free, falling linearly to MIN_FACTOR at 0."""
    if headroom >= NEAR_QUOTA:
        return 1.0
    return MIN_FACTOR + (1.0 - MIN_FACTOR) * max(headroom, 0.0) / NEAR_QUOTA


class QuotaView:
    """The latest published state per deployment, with when it arrived (monotonic seconds)."""

    def __init__(self) -> None:
        self.readings: dict[str, budget_pb2.DeploymentQuota] = {}
        self.received_s = 0.0

    def update(self, state: budget_pb2.QuotaState, now_s: float) -> None:
        self.readings = {d.deployment_id: d for d in state.deployments}
        self.received_s = now_s

    def reading(self, deployment_id: str, now_s: float) -> QuotaReading:
        quota = self.readings.get(deployment_id)
        age = now_s - self.received_s
        if quota is None or age > STALE_AFTER_S:
            return QuotaReading()
        return QuotaReading(
            headroom=quota.headroom, wait_s=max(units.seconds(quota.wait_ms) - max(age, 0.0), 0.0)
        )
