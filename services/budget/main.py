"""Budget authority process: queue group `budget` on `budget.authorize`.

The spine answers every authorization with a reservation id; caps, rate limits, settlement
and alerts are built on this wiring (issue: budgets, rate limits, API keys and alerts).
"""

from __future__ import annotations

from nats.aio.msg import Msg

from switchyard import metrics, subjects, telemetry
from switchyard.service import BusService, run
from switchyard.v1 import budget_pb2

tracer = telemetry.tracer("switchyard.budget")


class BudgetService(BusService):
    name = "budget"

    async def start(self) -> None:
        nc = await self.connect()
        self._sub = await nc.subscribe(
            subjects.BUDGET_AUTHORIZE, queue=subjects.BUDGET_QUEUE, cb=self._on_authorize
        )
        self.ready = True

    async def _on_authorize(self, msg: Msg) -> None:
        ctx = telemetry.extract_context(msg.headers)
        with metrics.track(self.name), tracer.start_as_current_span("budget.authorize", context=ctx) as span:
            ask = budget_pb2.AuthorizeRequest.FromString(msg.data)
            span.set_attribute("switchyard.request_id", ask.request_id)
            span.set_attribute("switchyard.project_id", ask.project_id)
            decision = budget_pb2.Decision(allow=True, reservation_id=ask.request_id)
            span.set_attribute("switchyard.allow", decision.allow)
            await msg.respond(decision.SerializeToString())


def main() -> None:
    run("budget", BudgetService)
