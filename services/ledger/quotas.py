"""Provider-quota use in the ledger: the budget authority's `quota.state`, sampled into the
`quota_usage` table (one row per limited deployment per sample; docs/quotas.md).

`quota_rows` and `QuotaSampler` are pure; `QuotaRecorder` is the thin NATS + store wiring the
ledger service starts. Samples are idempotent: a repeat of the same (deployment, ts) folds in
the ReplacingMergeTree, so several ledger replicas may record the same state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

from google.protobuf.message import DecodeError
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from switchyard import subjects, units
from switchyard.bus import NATS_ERRORS
from switchyard.tasks import cancel_and_wait
from switchyard.v1 import budget_pb2

from .store import LedgerStore

QUOTA_COLUMNS = [
    "ts",
    "deployment_id",
    "rpm_limit",
    "requests_available",
    "tpm_limit",
    "tokens_available",
    "input_tpm_limit",
    "input_tokens_available",
    "output_tpm_limit",
    "output_tokens_available",
    "max_concurrent",
    "concurrent",
    "headroom",
    "wait_s",
    "granted",
    "refused",
]

log = logging.getLogger("switchyard.ledger.quotas")


def quota_rows(state: budget_pb2.QuotaState) -> list[list[Any]]:
    ts = datetime.fromtimestamp(state.ts_unix_ms / 1000, UTC)
    return [
        [
            ts,
            d.deployment_id,
            d.rpm_limit,
            d.requests_available,
            d.tpm_limit,
            d.tokens_available,
            d.input_tpm_limit,
            d.input_tokens_available,
            d.output_tpm_limit,
            d.output_tokens_available,
            d.max_concurrent,
            d.concurrent,
            d.headroom,
            units.seconds(d.wait_ms),  # the column stays in seconds
            d.granted,
            d.refused,
        ]
        for d in state.deployments
    ]


class QuotaSampler:
    """Keeps the latest state; `take(now)` hands it out at most once per `every_s`, and only
    when something changed since the last one taken (an idle gateway writes nothing)."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.latest: budget_pb2.QuotaState | None = None
        self._taken_at = float("-inf")
        self._last_signature: tuple = ()

    def offer(self, state: budget_pb2.QuotaState) -> None:
        self.latest = state

    @staticmethod
    def signature(state: budget_pb2.QuotaState) -> tuple:
        return tuple(
            (d.deployment_id, d.granted, d.refused, d.concurrent, d.headroom) for d in state.deployments
        )

    def take(self, now_s: float) -> budget_pb2.QuotaState | None:
        state = self.latest
        if state is None or not state.deployments or now_s - self._taken_at < self.every_s:
            return None
        signature = self.signature(state)
        if signature == self._last_signature:
            return None
        self._taken_at, self._last_signature = now_s, signature
        return state


class QuotaRecorder:
    def __init__(self, nc: Client, store: LedgerStore, every_s: float) -> None:
        self.nc = nc
        self.store = store
        self.sampler = QuotaSampler(every_s)
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.sampler.every_s <= 0:
            return
        self._sub = await self.nc.subscribe(subjects.QUOTA_STATE, cb=self._on_state)
        self._task = asyncio.create_task(self._record(), name="ledger-quotas")

    async def _on_state(self, msg: Msg) -> None:
        with contextlib.suppress(DecodeError):  # a sample of a time series: skipping one is a gap
            self.sampler.offer(budget_pb2.QuotaState.FromString(msg.data))

    async def _record(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(self.sampler.every_s, 1.0))
            state = self.sampler.take(loop.time())
            if state is None:
                continue
            try:
                await self.store.insert("quota_usage", quota_rows(state), QUOTA_COLUMNS)
            except Exception as exc:  # a missed sample is only a gap in a time series
                log.warning("quota sample not recorded: %s", exc)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(*NATS_ERRORS):
                await self._sub.unsubscribe()
        await cancel_and_wait(self._task)
