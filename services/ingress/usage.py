"""`GET /v1/usage` (a project's own key) and `GET /admin/v1/usage?project=` (the admin token):
one project's spend, caps, headroom, burn rates and projected exhaustion, and its roll-up per
agent and run (docs/budgets.md, "Self-service usage").

The I/O only: the budget authority (`budget.status`) and the ledger (`ledger.read.usage`, a
typed read confined to the project) are asked at once; switchyard/usage.py builds the answer.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from google.protobuf.message import DecodeError
from nats.aio.client import Client as NATS

from switchyard import subjects
from switchyard.bus import NATS_ERRORS
from switchyard.errors import ErrorCode, GatewayError
from switchyard.settings import Settings
from switchyard.usage import PERIODS, usage_query, usage_report
from switchyard.v1 import ledger_pb2

ASK_TIMEOUT_S = 5.0
# No answer (no responder, a timeout, NATS away) or a garbled one: the caller may retry.
UNANSWERED: tuple[type[Exception], ...] = (*NATS_ERRORS, TimeoutError, DecodeError, orjson.JSONDecodeError)


async def read_usage(nc: NATS, settings: Settings, project_id: str, rollup: str = "month") -> dict[str, Any]:
    """The report for `project_id` (already authorised by the caller); `rollup` is the period the
    per-agent and per-run roll-ups cover."""
    if rollup not in PERIODS:
        raise GatewayError(
            ErrorCode.INVALID_REQUEST, f"period must be one of {', '.join(PERIODS)}", param="period"
        )
    now_ms = time.time_ns() // 1_000_000
    short_s, long_s = settings.budget_burn_short_window_s, settings.budget_burn_long_window_s
    ask = usage_query(project_id, short_s, long_s, now_ms, rollup)
    try:
        status_msg, ledger_msg = await asyncio.gather(
            nc.request(subjects.BUDGET_STATUS, orjson.dumps({"project": project_id}), timeout=ASK_TIMEOUT_S),
            nc.request(subjects.LEDGER_READ_USAGE, ask.SerializeToString(), timeout=ASK_TIMEOUT_S),
        )
        status = orjson.loads(status_msg.data)
        ledger = ledger_pb2.UsageReply.FromString(ledger_msg.data)
    except UNANSWERED:
        raise GatewayError(
            ErrorCode.UNAVAILABLE, "the budget authority or the ledger did not answer", retry_after_s=1
        ) from None
    if "error" in status:
        raise GatewayError(ErrorCode.UNAVAILABLE, str(status["error"]), retry_after_s=1)
    if ledger.HasField("error"):  # the store's own text stays in the ledger's log
        raise GatewayError(
            ErrorCode.UNAVAILABLE, f"the ledger could not read the usage ({ledger.error.code})"
        )
    report = usage_report(project_id, status, ledger, short_s, long_s, now_ms)
    report["rollup_period"] = rollup
    return report
