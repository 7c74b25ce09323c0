"""Runs the dashboard inside the ledger's event loop: uvicorn serving the app, the live feed
fed from `ledger.feed`, reads going straight to the store this process owns."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import orjson
import uvicorn
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from switchyard import subjects
from switchyard.bus import NATS_ERRORS
from switchyard.logs import UVICORN_LOGGING, register_secret
from switchyard.quiet_server import QuietServer
from switchyard.settings import Settings
from switchyard.tenancy import dashboard_token
from switchyard.tenancy_store import load_or_create_admin_token
from switchyard.usage import usage_query, usage_report

from .. import reads
from ..store import LedgerStore
from .access import DashboardAccess, parse_allowed_hosts
from .app import Dashboard
from .budgets import caps_from_status
from .feed import FeedHub

log = logging.getLogger("switchyard.ledger.dashboard")
CAPS_TIMEOUT_S = 0.5


def bind_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class _EmbeddedServer(QuietServer):
    """uvicorn without its own signal handlers: the ledger process owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class DashboardServer:
    def __init__(self, settings: Settings, store: LedgerStore, nc: NATS) -> None:
        self.settings = settings
        self.nc = nc
        self.hub = FeedHub()
        self.store = store
        self.dashboard = Dashboard(store.query, self._caps, self.hub, usage=self._usage)
        self.port = settings.dashboard_port
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None

    async def _usage(self, project_id: str, period: str) -> dict[str, Any]:
        """One project's usage report, as GET /v1/usage answers it (switchyard/usage.py): the
        ledger's sums read here, the live spend from the budget authority (the ledger's alone
        when it does not answer)."""
        now_ms = time.time_ns() // 1_000_000
        short_s, long_s = self.settings.budget_burn_short_window_s, self.settings.budget_burn_long_window_s
        ask = usage_query(project_id, short_s, long_s, now_ms, period)
        scopes, agents = [await self.store.query(sql, params) for sql, params in reads.usage_queries(ask)]
        try:
            reply = await self.nc.request(
                subjects.BUDGET_STATUS, orjson.dumps({"project": project_id}), timeout=2
            )
            status = orjson.loads(reply.data)
        except Exception as exc:  # a display panel: the ledger's spend rather than a failed page
            log.debug("no live spend from the budget authority: %s", exc)
            status = {}
        report = usage_report(
            project_id,
            status if "error" not in status else {},
            reads.usage_reply(scopes, agents),
            short_s,
            long_s,
            now_ms,
        )
        report["rollup_period"] = period
        return report

    async def _caps(self) -> Any:
        """Every project's caps and spend as the budget authority counts them; none when it
        does not answer (the dashboard says no caps are known)."""
        try:
            reply = await self.nc.request(subjects.BUDGET_STATUS, b"{}", timeout=CAPS_TIMEOUT_S)
            return caps_from_status(orjson.loads(reply.data))
        except Exception as exc:  # a display panel: no caps shown rather than a failed page
            log.debug("no caps from the budget authority: %s", exc)
            return {"caps": []}

    async def _on_feed(self, msg: Msg) -> None:
        try:
            self.hub.publish(orjson.loads(msg.data))
        except orjson.JSONDecodeError:
            log.warning("undecodable feed message dropped")

    async def start(self) -> None:
        admin_token = load_or_create_admin_token(self.settings.configured_admin_token, self.settings.data_dir)
        register_secret(admin_token)
        register_secret(dashboard_token(admin_token))
        app = DashboardAccess(
            self.dashboard.app,
            parse_allowed_hosts(self.settings.dashboard_allowed_hosts),
            lambda: admin_token,
        )
        config = uvicorn.Config(
            app,
            host=self.settings.dashboard_host,
            port=self.settings.dashboard_port,
            **UVICORN_LOGGING,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=2,
        )
        self._server = _EmbeddedServer(config)
        config.load()
        self._server.lifespan = config.lifespan_class(config)
        # Bind here, so a taken port raises OSError to the ledger (uvicorn would sys.exit).
        sock = bind_socket(self.settings.dashboard_host, self.settings.dashboard_port)
        self.port = sock.getsockname()[1]
        await self._server.startup(sockets=[sock])
        self._task = asyncio.create_task(self._server.main_loop(), name="dashboard")
        self._sub = await self.nc.subscribe(subjects.LEDGER_FEED, cb=self._on_feed)

    async def stop(self) -> None:
        self.hub.close()
        if self._sub is not None:
            with contextlib.suppress(*NATS_ERRORS):
                await self._sub.unsubscribe()
        if self._server is not None:
            self._server.request_exit()
            # Stopping must go on whatever uvicorn's loop raised (uvicorn logs its own errors).
            if self._task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._task, 5)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.shutdown(), 5)
