"""Handing a Dispatch to the worker pool of its current chain position.

Used by the router (first hand-off) and by workers (failover to another pool). The hand-off is
a NATS request the worker acknowledges on receipt, before calling the upstream: so a pool
with no worker is detected at once (no-responders goes only to the publisher) and the chain
moves on, while the ack costs the request nothing (the worker does not wait for it).
"""

from __future__ import annotations

import logging

from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from switchyard import subjects, telemetry
from switchyard.errors import ErrorCode
from switchyard.v1 import invoke_pb2

log = logging.getLogger(__name__)
ACK_TIMEOUT_S = 2.0


async def hand_off(nc: NATS, dispatch: invoke_pb2.Dispatch) -> bool:
    """Deliver to chain[position], skipping pools with no worker. False when none is left.

    A skipped pool is recorded as an attempt with error `no_worker`.
    """
    while dispatch.position < len(dispatch.chain):
        target = dispatch.chain[dispatch.position]
        try:
            await nc.request(
                subjects.provider_invoke(target.provider),
                dispatch.SerializeToString(),
                timeout=ACK_TIMEOUT_S,
                headers=telemetry.inject_headers(),
            )
            return True
        except NoRespondersError:
            dispatch.attempts.add(
                deployment_id=target.deployment_id,
                provider=target.provider,
                model=target.model,
                status=invoke_pb2.STATUS_ERROR,
                error_code=ErrorCode.NO_WORKER,
                error_message=f"no worker serves provider {target.provider!r}",
            )
            dispatch.position += 1
        except NatsTimeoutError:
            # Delivered but not acknowledged in time (a saturated worker): it may still run it,
            # so handing it to another pool could run the request twice. Keep waiting instead.
            log.warning("hand-off of %s to %s not acknowledged", dispatch.request.request_id, target.provider)
            return True
    return False
