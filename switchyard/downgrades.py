"""What a budget-aware downgrade saved (docs/routing.md, "Budget-aware downgrade"). Pure.

The router writes into the rationale the deployment a route would have chosen without its
downgrade and that deployment's estimated cost (services/router/downgrade.py); the ledger turns
it into the `downgrade_saved_usd` column with this function.
"""

from __future__ import annotations

from decimal import Decimal

from switchyard.v1 import invoke_pb2


def saved_usd(rationale: invoke_pb2.Rationale, served_deployment: str, cost: Decimal) -> Decimal:
    """What a downgraded request saved against the undowngraded choice: its bill scaled by the
    ratio of the two deployments' estimated costs for this request (the router's estimates of
    the same prompt and output), less the bill. 0 without a downgrade or when it saved nothing."""
    if not rationale.downgrade or not rationale.undowngraded_winner or cost <= 0:
        return Decimal(0)
    served = next((c.est_cost_usd for c in rationale.candidates if c.deployment_id == served_deployment), 0.0)
    if served <= 0 or rationale.undowngraded_est_cost_usd <= served:
        return Decimal(0)
    ratio = Decimal(str(rationale.undowngraded_est_cost_usd)) / Decimal(str(served))
    return (cost * ratio - cost).quantize(Decimal("0.0000000001"))
