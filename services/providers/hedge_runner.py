"""A hedged first attempt: the race between the first deployment and its hedge(s), decided in
the worker that holds the dispatch.

The router armed the dispatch (`Dispatch.hedge`, services/router/hedging.py). The worker starts
the first attempt; if it has not claimed the client (a stream: its first chunk; a plain request:
its complete answer) after `delay_ms`, and this worker's hedged share of the route allows it
(hedge_policy.py), a second attempt starts on the next deployment of the chain, as a second
asyncio task in this process: the upstream call itself when this worker serves the target's
provider, else a racer handed to that provider's pool whose frames come back here
(hedge_remote.py). The first racer to claim wins: the others are cancelled at once (the cancel
lands in the adapter's upstream call, here or in the other pool, which closes the connection).
A stream's chunks go to the client only after its claim, so the client never sees two answers.

Why this worker decides: it already owns the request's failover, billing and its one
Completion, and one event loop decides the winner; the other pool's worker only runs a call
(docs/routing.md, "Hedged requests", says why not the router or the ingress).

Every racer is recorded by the worker's one recorder and billed by the pure `verdict`: the winner
for its answer, a cancelled loser for what its provider reported or else the prompt it was sent.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from opentelemetry import trace

from switchyard import genai, metrics, telemetry
from switchyard.catalog import Deployment
from switchyard.errors import ErrorCode, GatewayError
from switchyard.v1 import invoke_pb2

from .execution import CLIENT_GONE, AttemptOutcome, AttemptProgress, bill_attempt, call_cost, verdict
from .hedge_remote import call_in_other_pool

if TYPE_CHECKING:
    from .main import ProviderWorker

tracer = telemetry.tracer("switchyard.providers")


def hedge_target(dispatch: invoke_pb2.Dispatch) -> invoke_pb2.Target | None:
    """The first hedge's target when this dispatch's current attempt may race one: the dispatch
    is armed, nothing was attempted yet, and the chain has a next deployment (served by this
    worker or by another pool: either races). A racer dispatch never hedges again."""
    if dispatch.hedge.delay_ms <= 0 or dispatch.attempts or dispatch.hedge_for:
        return None
    nxt = dispatch.position + 1
    if nxt >= len(dispatch.chain):
        return None
    return dispatch.chain[nxt]


def lost_to(winner: Deployment) -> GatewayError:
    return GatewayError(
        ErrorCode.CLIENT_CLOSED, f"lost the hedge race to {winner.id}; cancelled", retryable=False
    )


@dataclass
class Racer:
    deployment: Deployment
    position: int
    hedge: bool
    progress: AttemptProgress
    remote: bool = False  # run by a worker of another provider pool (hedge_remote.py)
    task: asyncio.Task[AttemptOutcome] | None = None
    cancelled_as: GatewayError | None = None  # why the race cancelled it (None: it did not)
    outcome: AttemptOutcome | None = None
    attempt: invoke_pb2.Attempt | None = None  # its record on the dispatch
    span: trace.Span = field(default_factory=trace.get_current_span)


class HedgeRace:
    """One dispatch's hedged first attempt. `run` returns like the worker's `_attempt`: "ok",
    "cancelled" or the final error code, or None to fail over to the next deployment."""

    def __init__(self, worker: ProviderWorker, dispatch: invoke_pb2.Dispatch, first: Deployment) -> None:
        self.worker = worker
        self.dispatch = dispatch
        self.plan = dispatch.hedge
        self.note = dispatch.rationale.hedge
        self.racers: list[Racer] = []
        self.winner: Racer | None = None
        self.started = time.monotonic()
        self._start(first, dispatch.position, hedge=False)

    def _start(self, deployment: Deployment, position: int, hedge: bool) -> Racer:
        racer = Racer(deployment, position, hedge, self.worker.new_progress(self.dispatch, deployment))
        racer.remote = deployment.provider not in self.worker.providers
        racer.task = asyncio.create_task(self._race(racer))
        self.racers.append(racer)
        return racer

    def _claim(self, racer: Racer) -> None:
        """First come, first served; the others are cancelled now (their connection closes)."""
        if self.winner is not None and self.winner is not racer:
            raise asyncio.CancelledError  # too late: cancelled_as already says why
        self.winner = racer
        for other in self.racers:
            if other is not racer and other.task is not None and not other.task.done():
                other.cancelled_as = lost_to(racer.deployment)
                other.task.cancel()

    async def _race(self, racer: Racer) -> AttemptOutcome:
        with tracer.start_as_current_span(
            genai.span_name(racer.deployment.model),
            kind=trace.SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": genai.OPERATION_CHAT,
                "gen_ai.request.model": racer.deployment.model,
                "switchyard.request_id": self.dispatch.request.request_id,
                "switchyard.hedge": racer.hedge,
                "switchyard.hedge_other_pool": racer.remote,
                **genai.target_attributes(racer.deployment.provider, "", racer.deployment.id),
            },
        ) as span:
            racer.span = span
            if racer.remote:
                outcome = await call_in_other_pool(
                    self.worker,
                    self.dispatch,
                    self.racers.index(racer),  # its key: <request id>~h<n>
                    racer.deployment,
                    racer.position,
                    racer.progress,
                    claim=lambda: self._claim(racer),
                    cancelled_as=lambda: racer.cancelled_as,
                )
            else:
                outcome = await self.worker._call_upstream(
                    self.dispatch,
                    racer.deployment,
                    racer.progress,
                    claim=lambda: self._claim(racer),
                    cancelled_as=lambda: racer.cancelled_as,
                )
            if outcome.kind == "ok" and self.winner is None:
                self._claim(racer)  # a plain answer (or a stream with no chunk) claims when done
            elif outcome.kind == "ok" and self.winner is not racer:
                # Finished in the same instant the other claimed: its answer is dropped, but
                # the provider billed it in full.
                racer.progress.reported = outcome.completed.usage if outcome.completed else None
                error = lost_to(self.winner.deployment) if self.winner else None
                outcome = AttemptOutcome("cancelled", racer.deployment, racer.progress, error=error)
            racer.outcome = outcome
            # Recorded as it ends (attempts are in the order they ended), by the one recorder.
            # (A racer in another pool: that worker reported its metrics and stat; this records
            # only its attempt.)
            self.worker._record(self.dispatch, outcome, span, own_call=not racer.remote)
            racer.attempt = self.dispatch.attempts[-1]
            racer.attempt.hedge = racer.hedge
            if outcome.kind == "cancelled" and outcome.error is not None and outcome.error is not CLIENT_GONE:
                racer.attempt.error_code = ""  # not an error: the race ended it
            return outcome

    def _next_target(self) -> tuple[Deployment, int] | None:
        position = self.racers[-1].position + 1
        if position >= len(self.dispatch.chain):
            return None
        target = self.dispatch.chain[position]
        deployment = self.worker.catalog.deployments.get(target.deployment_id)
        return (deployment, position) if deployment is not None else None

    def _may_fire(self) -> bool:
        window = self.worker.hedge_window
        if not window.may_fire(
            self.dispatch.route, self.plan.max_share, self.plan.window_ms / 1000, time.monotonic()
        ):
            self.note.skipped = f"the route's hedged share is at its cap ({self.plan.max_share:.0%})"
            return False
        return True

    async def _wait(self) -> None:
        """Fire hedges on time until a racer claims the client or every racer has ended."""
        delay_s = self.plan.delay_ms / 1000
        fire_at = self.started + delay_s
        hedges = 0
        firing = True
        while True:
            pending = {r.task for r in self.racers if r.task is not None and not r.task.done()}
            if not pending or self.winner is not None:
                break
            timeout = max(fire_at - time.monotonic(), 0.0) if firing else None
            done, _ = await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if done or not firing or self.winner is not None:
                continue
            target = self._next_target() if self._may_fire() else None
            if target is None:
                firing = False
                continue
            racer = self._start(*target, hedge=True)
            hedges += 1
            self.worker.hedge_window.fired(self.dispatch.route, time.monotonic(), self.plan.window_ms / 1000)
            metrics.HEDGES_FIRED.labels(self.dispatch.route).inc()
            self.note.fired = True
            self.note.fired_after_ms = (time.monotonic() - self.started) * 1000
            self.note.target = racer.deployment.id
            fire_at += delay_s
            firing = hedges < max(self.plan.max_hedges, 1)
        # A claim cancelled the others: they end within their next await.
        tasks = [r.task for r in self.racers if r.task is not None]
        await asyncio.wait(tasks)

    async def run(self) -> str | None:
        request_id = self.dispatch.request.request_id
        self.worker.hedge_window.armed(self.dispatch.route, time.monotonic(), self.plan.window_ms / 1000)
        self.worker._upstream[request_id] = asyncio.current_task()  # type: ignore[assignment]
        try:
            await self._wait()
        except asyncio.CancelledError:
            client_gone = self.worker._client_gone(request_id)
            for racer in self.racers:
                if racer.task is not None and not racer.task.done():
                    if client_gone:
                        racer.cancelled_as = CLIENT_GONE
                    racer.task.cancel()
            if not client_gone:
                raise  # a shutdown: the racers are cancelled with it
            await asyncio.wait([r.task for r in self.racers if r.task is not None])
        finally:
            self.worker._upstream.pop(request_id, None)
        return await self._settle()

    async def _settle(self) -> str | None:
        """Bill the losers, then carry out the verdict on the racer that decides the request: the
        winner, else the last one started (whose failure may fail over along the chain)."""
        dispatch = self.dispatch
        decider = self.winner or self.racers[-1]
        others = Decimal(0)
        for racer in self.racers:
            if racer is decider:
                continue
            assert racer.outcome is not None and racer.attempt is not None
            # A cancelled racer is billed as `verdict` bills any cancelled call; a failed one
            # never reached the client and is not billed.
            billed = verdict(racer.outcome, dispatch).billed if racer.outcome.kind == "cancelled" else None
            cost = call_cost(racer.deployment, billed) if billed is not None else Decimal(0)
            bill_attempt(racer.attempt, billed, cost)
            others += cost
        if self.note.fired:
            metrics.HEDGE_LOSER_COST.labels(dispatch.route).inc(float(others))
        if self.winner is not None:
            self.note.winner = self.winner.deployment.id
            self.note.hedge_won = self.winner.hedge
            if self.winner.hedge:
                metrics.HEDGES_WON.labels(dispatch.route).inc()
        assert decider.outcome is not None
        dispatch.position = decider.position
        decision = verdict(decider.outcome, dispatch)
        if decision.fail_over:
            metrics.FAILOVERS.labels(decider.deployment.provider).inc()
            dispatch.position = max(r.position for r in self.racers) + 1
            return None
        span = trace.get_current_span()  # the dispatch span: the racers' own have ended
        await self.worker._end(dispatch, decider.outcome, decision, span, decider.attempt, others)
        return decider.outcome.code
