"""Budget pressure for the routers: how full each budgeted scope is, so a route with a downgrade
policy can move its requests to cheaper deployments as a cap nears (docs/routing.md,
"Budget-aware downgrade").

The leader publishes on `budget.pressure` (core NATS fan-out, JSON) every PRESSURE_EVERY_S,
only while some budget exists: per scope its fullest budget, (spent + held by requests) / cap, because
held money is what makes a cap refuse (a budget lease's unused slice is left out: it is headroom
set aside for a router, not spend). `pressure` is pure; `publish` is the leader's loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from .authority import Authority
from .burn_watch import requests_held
from .periods import period_start

PRESSURE_EVERY_S = 0.5
log = logging.getLogger("switchyard.budget.pressure")


def pressure(authority: Authority, now_ms: int) -> dict[str, Any]:
    """{"ts_unix_ms", "scopes": {scope: {"used_pct", "period", "cap_usd"}}}: each budgeted
    scope's fullest budget in its current period."""
    scopes: dict[str, dict[str, Any]] = {}
    for budget in list(authority.view.budgets.values()):
        slot = (budget.scope_label, budget.period, period_start(budget.period, now_ms))
        # Budget leases' slack is not counted: it is headroom set aside, not spend (burn_watch.py).
        used = float(
            (authority.book.counter(slot).spent + requests_held(authority, slot)) / budget.cap_usd * 100
        )
        seen = scopes.get(budget.scope_label)
        if seen is None or used > seen["used_pct"]:
            scopes[budget.scope_label] = {
                "used_pct": round(used, 3),
                "period": budget.period,
                "cap_usd": format(budget.cap_usd.normalize(), "f"),
            }
    return {"ts_unix_ms": now_ms, "scopes": scopes}


async def publish(authority: Authority, send: Callable[[bytes], Awaitable[None]]) -> None:
    """The leader's loop (one per leadership term)."""
    while True:
        try:
            if authority.view.budgets:
                await send(orjson.dumps(pressure(authority, time.time_ns() // 1_000_000)))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # NATS reconnecting (the loop must outlive anything): next tick
            log.warning("budget pressure not published: %s", exc)
        await asyncio.sleep(PRESSURE_EVERY_S)
