"""The dashboard's HTTP app: the page, its static files (uPlot vendored, never a CDN), a JSON
read API over the ledger, and the live feed as Server-Sent Events."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from switchyard import metrics
from switchyard.errors import ErrorCode

from . import budgets, queries
from .feed import FeedHub, sse

log = logging.getLogger("switchyard.ledger.dashboard")
STATIC = Path(__file__).parent / "static"
PING_S = 15.0

Query = Callable[[str, dict[str, Any]], Awaitable[tuple[list[str], Sequence[Sequence[Any]]]]]
Caps = Callable[[], Awaitable[Any]]


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error(code: str, message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


class Dashboard:
    """Routes over a query function (the store) and a caps function (the budget authority)."""

    def __init__(
        self,
        query: Query,
        caps: Caps,
        hub: FeedHub,
        clock: Callable[[], datetime] | None = None,
        usage: Callable[[str, str], Awaitable[dict[str, Any]]] | None = None,
    ):
        self.query = query
        self.caps = caps
        self.usage_report = usage
        self.hub = hub
        self.clock = clock or (lambda: datetime.now(UTC))
        self.app = Starlette(
            routes=[
                Route("/", self.index),
                Route("/api/overview", self.overview),
                Route("/api/budgets", self.budgets),
                Route("/api/quotas", self.quotas),
                Route("/api/alerts", self.alerts),
                Route("/api/usage", self.usage),
                Route("/api/recent", self.recent),
                Route("/api/requests/{request_id}", self.request),
                Route("/api/feed", self.feed),
                Route("/healthz", self.healthz),
                Mount("/static", StaticFiles(directory=STATIC), name="static"),
            ],
            exception_handlers={Exception: self._on_exception},
        )

    async def _on_exception(self, request: Request, exc: Exception) -> Response:
        log.error("dashboard %s failed: %s", request.url.path, exc)
        return error(ErrorCode.INTERNAL, f"dashboard query failed: {type(exc).__name__}", 500)

    async def _records(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        columns, rows = await self.query(sql, params)
        return queries.records(columns, rows)

    async def index(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def overview(self, request: Request) -> Response:
        window = request.query_params.get("window", "1h")
        if window not in queries.WINDOWS:
            return error(
                ErrorCode.INVALID_REQUEST, f"window must be one of {', '.join(queries.WINDOWS)}", 400
            )
        now = self.clock()
        since, step = queries.window_bounds(window, now)
        params = {"since": since, "step": step}
        series = await self._records(queries.SPEND_OVER_TIME, params)
        totals = await self._records(queries.TOTALS, params)
        return JSONResponse(
            {
                "window": window,
                "since": int(since.timestamp() * 1000),
                "step_minutes": step,
                "totals": queries.with_average_latency(totals)[0] if totals else {},
                "series": queries.pivot_series(series, since, now, step),
                "by_project": await self._records(queries.BY_PROJECT, params),
                "by_model": queries.with_average_latency(await self._records(queries.BY_MODEL, params)),
                "providers": queries.provider_rows(await self._records(queries.PROVIDERS, params)),
                "hedging": queries.hedging_row(await self._records(queries.HEDGING, params)),
            }
        )

    async def budgets(self, request: Request) -> Response:
        caps = budgets.parse_caps(await self.caps())
        return JSONResponse({"caps": [budgets.usage_row(cap, cap.spent_usd) for cap in caps]})

    async def quotas(self, request: Request) -> Response:
        """Provider-quota use per deployment (docs/quotas.md), from the ledger's samples."""
        window = request.query_params.get("window", "1h")
        if window not in queries.WINDOWS:
            return error(
                ErrorCode.INVALID_REQUEST, f"window must be one of {', '.join(queries.WINDOWS)}", 400
            )
        since, _ = queries.window_bounds(window, self.clock())
        rows = await self._records(queries.QUOTAS, {"since": since})
        return JSONResponse({"window": window, "deployments": queries.quota_rows(rows)})

    async def alerts(self, request: Request) -> Response:
        """Budget alerts in the window (the ledger's `budget_alerts`), refusals counted."""
        window = request.query_params.get("window", "24h")
        if window not in queries.WINDOWS:
            return error(
                ErrorCode.INVALID_REQUEST, f"window must be one of {', '.join(queries.WINDOWS)}", 400
            )
        since, _ = queries.window_bounds(window, self.clock())
        alerts = await self._records(queries.ALERTS, {"since": since})
        refusals = await self._records(queries.REFUSALS, {"since": since}) if alerts else []
        return JSONResponse({"window": window, "alerts": queries.alert_rows(alerts, refusals)})

    async def usage(self, request: Request) -> Response:
        """One project's usage, the same report as its keys get on GET /v1/usage."""
        project = request.query_params.get("project", "")
        period = request.query_params.get("period", "month")
        if not project or period not in budgets.PERIODS:
            return error(ErrorCode.INVALID_REQUEST, "project is required; period is day, month or total", 400)
        if self.usage_report is None:
            return error(ErrorCode.UNAVAILABLE, "usage is not served by this dashboard", 503)
        return JSONResponse(await self.usage_report(project, period))

    async def recent(self, request: Request) -> Response:
        try:
            limit = min(max(int(request.query_params.get("limit", "50")), 1), 500)
        except ValueError:
            return error(ErrorCode.INVALID_REQUEST, "limit must be an integer", 400)
        return JSONResponse({"items": await self._records(queries.RECENT, {"limit": limit})})

    async def request(self, request: Request) -> Response:
        request_id = request.path_params["request_id"]
        found = await self._records(queries.REQUEST, {"id": request_id})
        if not found:
            return error(ErrorCode.NOT_FOUND, f"no ledger row for {request_id} (yet)", 404)
        row = found[0]
        for field in ("attempts", "rationale"):
            row[field] = orjson.loads(row[field] or "null")
        attempts = await self._records(queries.ATTEMPTS, {"id": request_id})
        return JSONResponse({"request": row, "attempts": attempts})

    async def feed(self, request: Request) -> Response:
        queue = self.hub.subscribe()
        metrics.DASHBOARD_CLIENTS.set(self.hub.clients)

        async def events() -> AsyncIterator[bytes]:
            try:
                yield sse("hello", b"{}")
                while True:
                    try:
                        items = await asyncio.wait_for(queue.get(), PING_S)
                    except TimeoutError:
                        yield b": ping\n\n"  # finds closed connections, keeps proxies from timing out
                        continue
                    if items is None:  # the server is stopping
                        return
                    yield sse("requests", orjson.dumps(items))
            finally:
                self.hub.unsubscribe(queue)
                metrics.DASHBOARD_CLIENTS.set(self.hub.clients)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
