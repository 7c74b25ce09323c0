"""The one builder of the `Completion` event, the ledger's record of a finished request.

Two services end requests: the router, for one refused before any upstream call (`rejected`),
and the provider worker, for every other (`ok`, `error`, `cancelled`). Both build the event
here, so a field added to it is filled in one place. Pure: the caller passes the trace id.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from switchyard.catalog import Deployment
from switchyard.pricing import format_usd
from switchyard.v1 import events_pb2, invoke_pb2
from switchyard.vocab import status_value

MAX_ERROR_MESSAGE = 1000  # characters of an error message the ledger keeps


def completion_event(
    request: invoke_pb2.InvokeRequest,
    *,
    status: str,
    trace_id: str,
    dispatch: invoke_pb2.Dispatch | None = None,
    deployment: Deployment | None = None,
    response: invoke_pb2.InvokeResponse | None = None,
    error: invoke_pb2.Error | None = None,
    usage: invoke_pb2.Usage | None = None,
    cost: Decimal = Decimal(0),
    ttft_ms: float = 0.0,
) -> events_pb2.Completion:
    """The event for `request`. `dispatch` is the routed request (None when the router refused
    it): it brings the route, the attempts, the rationale, the reservation and the overhead
    (the time not spent waiting on upstreams)."""
    finished = time.time_ns() / 1e6
    started = request.received_unix_ms
    latency = finished - started
    routed: dict[str, Any] = {}
    if dispatch is not None:
        upstream = sum(a.latency_ms for a in dispatch.attempts)
        routed = {
            "route": dispatch.route,
            "overhead_ms": max(latency - upstream, 0.0),
            "attempts": dispatch.attempts,
            "rationale": dispatch.rationale,
            "reservation_id": dispatch.reservation_id,
            "lease_id": dispatch.lease_id,  # admitted from a budget lease (docs/budgets.md, "Leases")
            "lease_held_usd": dispatch.lease_held_usd,
            "lease_tokens": dispatch.lease_tokens,  # its TPM estimate, corrected at settlement
        }
    event = events_pb2.Completion(
        request_id=request.request_id,
        project_id=request.project_id,
        agent_id=request.agent_id,
        key_id=request.key_id,
        requested_model=request.model,
        status=status_value(status),
        cost_usd=format_usd(cost),
        latency_ms=latency,
        ttft_ms=ttft_ms,
        stream=request.stream,
        trace_id=trace_id,
        metadata=request.metadata,
        started_unix_ms=int(started),
        finished_unix_ms=int(finished),
        api=request.api,
        **routed,
    )
    if deployment is not None:
        event.provider = deployment.provider
        event.model = deployment.model
        event.deployment_id = deployment.id
    if usage is not None:
        event.usage.CopyFrom(usage)
    if response is not None:
        event.finish_reason = response.finish_reason
    if error is not None:
        event.error_code = error.code
        event.error_message = error.message[:MAX_ERROR_MESSAGE]
    return event
