"""A hedge racer in another provider pool: both halves of the cross-pool race.

In the default topology each provider has its own worker pool, so a hedge to "another provider"
needs a worker of that pool. The race is still decided by the worker that holds the dispatch
(the *racing worker*, hedge_runner.py): it hands a racer dispatch (`Dispatch.hedge_for` set,
its request id the racer's key `<id>~h<n>`, its chain the one target) to the target's pool
over the ordinary hand-off, with its own inbox as the reply subject. The *racer worker* runs
that one upstream call and sends its frames there: chunks as they come, then one final (its
attempt record inside) or error frame. The racing worker treats the first content frame (a
plain request: the final) as the racer's claim; a stream's chunks are relayed to the client
only after that claim, so the client never sees two answers. The loser is cancelled at once
by `llm.cancel.<key>`, which closes its upstream connection in whichever pool it runs.

Exactly once in the ledger: only the racing worker records the request (both attempts, the
cost as their sum); a racer worker publishes no Completion, only the provider stat that routers
and quotas learn from (its request id is the racer's key, which no router watches).

Why the racing worker and not the router or the ingress: docs/routing.md, "Hedged requests".
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Literal

from nats.errors import TimeoutError as NatsTimeoutError
from opentelemetry import trace

from switchyard import codec, genai, subjects, telemetry
from switchyard.bus import NATS_ERRORS
from switchyard.catalog import Catalog, Deployment
from switchyard.errors import ErrorCode, GatewayError
from switchyard.handoff import hand_off
from switchyard.v1 import invoke_pb2
from switchyard.vocab import Status, finish_reason_text, finish_reason_value

from .adapters.base import Completed
from .execution import AttemptOutcome, AttemptProgress, Claim, deadline_error, now_ms, remaining_s

if TYPE_CHECKING:
    from collections.abc import Callable

    from .main import ProviderWorker

tracer = telemetry.tracer("switchyard.providers")

RACE_MARK = "~h"  # a racer's key is `<request id>~h<n>`: one NATS subject token, like the id
# The longest a racer without a request deadline is waited for (every API sets a deadline).
NO_DEADLINE_WAIT_S = 600.0

FrameKind = Literal["content", "final", "error"]


def race_key(request_id: str, n: int) -> str:
    """The key of the request's n-th racer: its request id in the other pool, what its cancel names."""
    return f"{request_id}{RACE_MARK}{n}"


def is_race_key(request_id: str) -> bool:
    return RACE_MARK in request_id


def racer_dispatch(dispatch: invoke_pb2.Dispatch, position: int, key: str, inbox: str) -> invoke_pb2.Dispatch:
    """The dispatch a racer worker runs: the one target at `position`, answering into `inbox`,
    with the request's budget hold (a stream stops at it, as an in-process racer does), and no
    hedge plan, failover, rationale or reservation: the racing worker keeps those."""
    request = invoke_pb2.InvokeRequest()
    request.CopyFrom(dispatch.request)
    request.request_id = key
    return invoke_pb2.Dispatch(
        request=request,
        chain=[dispatch.chain[position]],
        position=0,
        reply_to=inbox,
        route=dispatch.route,
        max_attempts=1,
        routed_unix_ms=dispatch.routed_unix_ms,
        reserved_usd=dispatch.reserved_usd,
        hedge_for=dispatch.request.request_id,
    )


def frame_kind(reply: invoke_pb2.Reply) -> FrameKind:
    """A racer's frame: its answer ends with `final` or `error`; anything else is content for the
    client (a chunk, or whatever content frame the racer worker's build sends)."""
    kind = reply.WhichOneof("frame")
    if kind == "final":
        return "final"
    if kind == "error":
        return "error"
    return "content"


def racer_report(
    dispatch: invoke_pb2.Dispatch, deployment: Deployment, completed: Completed, attempt: invoke_pb2.Attempt
) -> invoke_pb2.InvokeResponse:
    """A racer worker's final frame: the answer in neutral terms and its attempt record (its
    HTTP status, the provider's usage). Cost, rationale and the request's attempts are the
    racing worker's to add."""
    return invoke_pb2.InvokeResponse(
        request_id=dispatch.hedge_for,
        provider=deployment.provider,
        model=deployment.model,
        deployment_id=deployment.id,
        message=completed.message,
        finish_reason=finish_reason_value(completed.finish_reason),
        usage=completed.usage,
        attempts=[attempt],
        embeddings=completed.embeddings,
        usage_estimated=completed.usage_estimated,
    )


def completed_from(report: invoke_pb2.InvokeResponse) -> Completed:
    """The racer's answer as the racing worker's own upstream call would have returned it."""
    return Completed(
        message=report.message,
        finish_reason=str(finish_reason_text(report.finish_reason)),
        usage=report.usage,
        http_status=report.attempts[0].http_status if report.attempts else 200,
        embeddings=list(report.embeddings),
        usage_estimated=report.usage_estimated,
    )


def refused_error(handed: invoke_pb2.Dispatch, deployment: Deployment) -> GatewayError:
    """Why the target's pool did not take the racer (the hand-off recorded it: no worker, or
    every worker asked was full)."""
    if handed.attempts:
        why = handed.attempts[-1]
        return GatewayError(why.error_code, why.error_message, provider=deployment.provider)
    return GatewayError(
        ErrorCode.NO_WORKER,
        f"no worker serves provider {deployment.provider!r}",
        provider=deployment.provider,
    )


def hedge_partners(catalog: Catalog, providers: list[str]) -> list[Deployment]:
    """Deployments of other pools this worker may race as hedge targets: those of the routes
    with a hedge policy (and no side effects) that hold a deployment it serves. The worker loads
    their prompt counters at start, as for its own: a cancelled racer is billed the prompt
    estimate, and loading an encoding inside a request would stall its event loop."""
    partners: dict[str, Deployment] = {}
    for route in catalog.routes.values():
        if route.hedge is None or route.side_effects:
            continue
        members = [catalog.deployments[d] for d in route.deployments if d in catalog.deployments]
        if any(d.provider in providers for d in members):
            partners.update({d.id: d for d in members if d.provider not in providers})
    return list(partners.values())


# The racing worker's side -------------------------------------------------------------------


async def call_in_other_pool(
    worker: ProviderWorker,
    dispatch: invoke_pb2.Dispatch,
    n: int,
    deployment: Deployment,
    position: int,
    progress: AttemptProgress,
    claim: Claim,
    cancelled_as: Callable[[], GatewayError | None],
) -> AttemptOutcome:
    """Run racer `n` in the target's pool and wait for its outcome; relay its chunks to the
    client once `claim` made it the winner. Cancelled (the race lost, the client left, a
    shutdown), it cancels the racer's upstream call at once, then returns as `_call_upstream`
    does: a cancelled outcome when the race ended it, else the CancelledError propagates."""
    bus = worker.bus
    key = race_key(dispatch.request.request_id, n)
    sub = await bus.subscribe(bus.new_inbox())
    try:
        handed = racer_dispatch(dispatch, position, key, sub.subject)
        if not await hand_off(bus, handed):
            return AttemptOutcome("error", deployment, progress, error=refused_error(handed, deployment))
        while True:
            left_s = remaining_s(dispatch.request)
            msg = await sub.next_msg(timeout=NO_DEADLINE_WAIT_S if left_s is None else max(left_s, 0.001))
            reply = codec.decode_reply(msg.data)
            kind = frame_kind(reply)
            if kind == "final":
                return AttemptOutcome("ok", deployment, progress, completed=completed_from(reply.final))
            if kind == "error":
                return AttemptOutcome(
                    "error", deployment, progress, error=GatewayError.from_proto(reply.error)
                )
            if not progress.chunks_sent:
                progress.ttft_ms = now_ms() - progress.started_ms
                claim()  # the loser is cancelled at once: it never relays a chunk
                progress.chunks_sent = True
            if reply.HasField("chunk"):
                progress.add_chunk(reply.chunk)
            elif reply.HasField("chunks"):  # coalesced by the racer's worker (coalesce.py)
                for chunk in reply.chunks.chunks:
                    progress.add_chunk(chunk)
            await worker.send_frame(dispatch.reply_to, msg.data)
    except NatsTimeoutError:
        return AttemptOutcome("error", deployment, progress, error=deadline_error(deployment.provider))
    except asyncio.CancelledError:
        with contextlib.suppress(*NATS_ERRORS):
            await bus.publish(subjects.cancel(key), b"")  # its upstream connection closes now
        reason = cancelled_as()
        if reason is None:
            raise  # a shutdown
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        return AttemptOutcome("cancelled", deployment, progress, error=reason)
    finally:
        with contextlib.suppress(*NATS_ERRORS):
            await sub.unsubscribe()


# The racer worker's side --------------------------------------------------------------------


async def run_racer(worker: ProviderWorker, dispatch: invoke_pb2.Dispatch) -> str:
    """Run a racer dispatch another pool's worker handed here: one upstream call, its frames to
    the racing worker, its stat to the routers; no failover, no hedge, no Completion."""
    key = dispatch.request.request_id
    target = dispatch.chain[dispatch.position]
    deployment = worker.catalog.deployments.get(target.deployment_id)
    if deployment is None or deployment.provider not in worker.providers:
        error = GatewayError(
            ErrorCode.UNAVAILABLE, f"deployment {target.deployment_id} is not configured on this worker"
        )
        await worker.send_frame(dispatch.reply_to, codec.error_frame(error.to_proto(dispatch.hedge_for)))
        return error.code
    if worker.cancelled_before_start(key):
        return Status.CANCELLED  # the race ended while it waited for a slot: no upstream call
    with tracer.start_as_current_span(
        genai.span_name(deployment.model),
        kind=trace.SpanKind.CLIENT,
        attributes={
            "gen_ai.operation.name": genai.OPERATION_CHAT,
            "gen_ai.request.model": deployment.model,
            "switchyard.request_id": dispatch.hedge_for,
            "switchyard.hedge": True,
            **genai.target_attributes(deployment.provider, "", deployment.id),
        },
    ) as span:
        outcome = await worker._call_upstream(dispatch, deployment)
        worker._record(dispatch, outcome, span)  # metrics and the stat; the racing worker bills
    if outcome.kind == "ok":
        assert outcome.completed is not None
        report = racer_report(dispatch, deployment, outcome.completed, dispatch.attempts[-1])
        await worker.send_frame(dispatch.reply_to, codec.final_frame(report))
    elif outcome.kind != "cancelled":  # cancelled: the racing worker no longer listens
        assert outcome.error is not None
        await worker.send_frame(
            dispatch.reply_to, codec.error_frame(outcome.error.to_proto(dispatch.hedge_for))
        )
    return outcome.code
