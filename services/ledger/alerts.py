"""Budget alerts in the ledger: the `budget_alerts` table, written from `events.budget.alert`
(stream EVENTS) by the durable consumer `ledger-alerts`, so the dashboard and analysts see
every alert the webhook was sent (docs/observability.md, "Budget alerts").

`alert_row` is pure; `AlertRecorder` is the thin NATS + store wiring the ledger starts. An
alert is acked after its row is stored (or found stored: a redelivery writes nothing twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from google.protobuf.message import DecodeError
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import FetchTimeoutError

from switchyard import subjects, units
from switchyard.bus import NATS_ERRORS
from switchyard.tasks import cancel_and_wait
from switchyard.v1 import events_pb2

from .store import LedgerStore

log = logging.getLogger("switchyard.ledger.alerts")

ALERT_COLUMNS = [
    "alert_id", "ts", "kind", "scope_kind", "scope_id", "project_id", "period", "period_start",
    "threshold_pct", "cap_usd", "spent_usd", "reserved_usd", "refused_usd", "refused_count",
    "window_s", "rate_usd_per_hour", "long_window_s", "long_rate_usd_per_hour", "projected_at",
    "period_end", "message",
]  # fmt: skip

STORED_ALERTS_SQL = "SELECT DISTINCT alert_id FROM budget_alerts WHERE alert_id IN {ids:Array(String)}"
BATCH = 64
IDLE_FETCH_S = 10.0


def _usd(text: str) -> Decimal:
    try:
        value = Decimal(text or "0")
    except InvalidOperation:
        return Decimal(0)
    return value if value.is_finite() else Decimal(0)


def _when(unix_ms: int) -> datetime | None:
    return datetime.fromtimestamp(unix_ms / 1000, tz=UTC) if unix_ms else None


def alert_row(alert: events_pb2.BudgetAlert, alert_id: str) -> list[Any]:
    """One `budget_alerts` row in ALERT_COLUMNS order. An alert with no id (an old sender)
    gets one from its fields, so a redelivery still folds into the same row."""
    kind = alert.kind or "threshold"
    if not alert_id:
        alert_id = f"alert.{alert.scope_kind}.{alert.scope_id}.{alert.period}.{alert.period_start}.{kind}"
    return [
        alert_id,
        datetime.fromtimestamp(alert.ts_unix_ms / 1000, tz=UTC),
        kind,
        alert.scope_kind,
        alert.scope_id,
        alert.project_id,
        alert.period,
        alert.period_start,
        alert.threshold_pct,
        _usd(alert.cap_usd),
        _usd(alert.spent_usd),
        _usd(alert.reserved_usd),
        _usd(alert.refused_usd),
        alert.refused_count,
        units.seconds(alert.window_ms),
        _usd(alert.rate_usd_per_hour),
        units.seconds(alert.long_window_ms),
        _usd(alert.long_rate_usd_per_hour),
        _when(alert.projected_unix_ms),
        _when(alert.period_end_unix_ms),
        alert.message,
    ]


class AlertRecorder:
    """Pulls budget alerts and stores them; one durable consumer shared by ledger replicas."""

    def __init__(self, nc: Client, store: LedgerStore) -> None:
        self.nc = nc
        self.store = store
        self.recorded = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        js = self.nc.jetstream()
        self._psub = await js.pull_subscribe(
            subjects.BUDGET_ALERT,
            durable=subjects.LEDGER_ALERTS_DURABLE,
            stream=subjects.EVENTS_STREAM,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL, ack_wait=30
            ),
        )
        self._task = asyncio.create_task(self._run(), name="ledger-alerts")

    async def _run(self) -> None:
        while True:
            try:
                # A long pull: an idle gateway makes one request every IDLE_FETCH_S, and an alert
                # is delivered the moment it is stored (docs/performance.md, "Idle cost").
                msgs = await self._psub.fetch(BATCH, timeout=IDLE_FETCH_S)
            except (FetchTimeoutError, NatsTimeoutError, TimeoutError):
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS reconnecting (the loop must outlive anything): fetch again
                log.warning("alert fetch failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            try:
                await self.record(msgs)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # not acked: redelivered after ack_wait, stored once
                log.warning("%d alert(s) not recorded yet: %s", len(msgs), exc)
                await asyncio.sleep(1.0)

    async def record(self, msgs: list[Msg]) -> None:
        rows: dict[str, list[Any]] = {}
        done: list[Msg] = []
        for msg in msgs:
            try:
                alert = events_pb2.BudgetAlert.FromString(msg.data)
            except DecodeError:
                log.error("undecodable budget alert dropped (seq %s)", msg.metadata.sequence.stream)
                await msg.term()  # redelivery cannot make it decode
                continue
            done.append(msg)
            row = alert_row(alert, (msg.headers or {}).get("Nats-Msg-Id", ""))
            rows.setdefault(row[0], row)
        if rows:
            _, found = await self.store.query(STORED_ALERTS_SQL, {"ids": list(rows)})
            stored = {r[0] for r in found}
            fresh = [row for alert_id, row in rows.items() if alert_id not in stored]
            await self.store.insert("budget_alerts", fresh, ALERT_COLUMNS)
            self.recorded += len(fresh)
        for msg in done:
            with contextlib.suppress(*NATS_ERRORS):
                await msg.ack()

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            with contextlib.suppress(*NATS_ERRORS):
                await self._psub.unsubscribe()
