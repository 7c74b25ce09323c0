"""Budget alerts to a webhook: a durable pull consumer on `events.budget.alert`, shared by all
budget processes, POSTs each alert as JSON and acks it after a 2xx or the last retry.

At-least-once: an alert whose sender died mid-retry is redelivered after ACK_WAIT_S; the
`Idempotency-Key` header (the alert's id) lets the receiver drop repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import httpx
from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import FetchTimeoutError

from switchyard import subjects
from switchyard.bus import NATS_ERRORS
from switchyard.tasks import cancel_and_wait
from switchyard.v1 import events_pb2

from .alerts import retry_delays, webhook_body

log = logging.getLogger("switchyard.budget.webhook")
ATTEMPTS = 6
ACK_WAIT_S = 120  # longer than every retry of one alert together


class WebhookSender:
    def __init__(self, nc: NATS, url: str, attempts: int = ATTEMPTS, first_delay_s: float = 0.5) -> None:
        self.nc = nc
        self.url = url
        self.delays = retry_delays(attempts, first_delay_s)
        self.delivered = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        js = self.nc.jetstream()
        self._psub = await js.pull_subscribe(
            subjects.BUDGET_ALERT,
            durable=subjects.BUDGET_WEBHOOK_DURABLE,
            stream=subjects.EVENTS_STREAM,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.NEW, ack_wait=ACK_WAIT_S
            ),
        )
        self._http = httpx.AsyncClient(timeout=10)
        self._task = asyncio.create_task(self._run(), name="budget-webhook")

    async def _run(self) -> None:
        while True:
            try:
                msgs = await self._psub.fetch(16, timeout=1.0)
            except (FetchTimeoutError, NatsTimeoutError, TimeoutError):
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the sender's loop must outlive anything: log and fetch again
                log.warning("alert fetch failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                alert = events_pb2.BudgetAlert.FromString(msg.data)
                alert_key = (msg.headers or {}).get("Nats-Msg-Id", "")
                await self.post(webhook_body(alert, alert_key), alert_key)
                await msg.ack()

    async def post(self, body: dict, alert_key: str) -> bool:
        headers = {"Idempotency-Key": alert_key} if alert_key else {}
        for attempt, delay in enumerate([0.0, *self.delays], start=1):
            await asyncio.sleep(delay)
            try:
                r = await self._http.post(self.url, json=body, headers=headers)
                if r.is_success:
                    self.delivered += 1
                    return True
                log.warning("alert webhook answered %d (attempt %d)", r.status_code, attempt)
            except httpx.HTTPError as exc:
                log.warning("alert webhook failed (attempt %d): %s", attempt, type(exc).__name__)
        log.error("alert %s not delivered to the webhook after %d attempts", alert_key, len(self.delays) + 1)
        return False

    async def stop(self) -> None:
        if self._task:
            await cancel_and_wait(self._task)
            with contextlib.suppress(*NATS_ERRORS):
                await self._psub.unsubscribe()
            await self._http.aclose()
