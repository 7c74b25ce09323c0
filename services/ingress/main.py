"""Ingress process: uvicorn (uvloop + httptools, guarded by connections.py) serving the Starlette app."""

from __future__ import annotations

import signal
import socket
import sys

import uvicorn

from switchyard.logs import UVICORN_LOGGING, setup_logging
from switchyard.quiet_server import QuietServer
from switchyard.settings import load_settings
from switchyard.telemetry import setup_tracing

from .app import Ingress
from .connections import guard_from, guarded_protocol
from .early_shed import EarlyShed

# Seconds between the ingress refusing what it still holds and uvicorn cancelling the handlers.
DRAIN_MARGIN_S = 5


def _exit_cleanly(signum: int, frame: object) -> None:
    sys.exit(0)


def main() -> None:
    # uvicorn drains on SIGTERM/SIGINT, restores the handlers it found, then re-raises the
    # signal; with these handlers a completed drain exits 0, like every other service.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    signal.signal(signal.SIGINT, _exit_cleanly)
    settings = load_settings()
    setup_logging("ingress", settings.log_level, settings.log_json)
    setup_tracing("ingress", span_dir=settings.span_dir)
    ingress = Ingress(settings)
    config = uvicorn.Config(
        ingress.app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        # httptools + connection limits, header deadline, and refusals for load without the app
        http=guarded_protocol(
            guard_from(settings), EarlyShed(ingress.limits, ingress.overload, ingress.auth)
        ),
        **UVICORN_LOGGING,
        # Past the drain, the requests still held are refused in their dialect (503 +
        # Retry-After, app.py); uvicorn's own cut (a bare 500) comes only after that.
        timeout_graceful_shutdown=int(settings.ingress_drain) + DRAIN_MARGIN_S,
        server_header=False,
        proxy_headers=False,  # nothing reads the client's address (X-Forwarded-For): one layer less
    )
    DrainingServer(config, ingress).run()


class DrainingServer(QuietServer):
    """uvicorn's server, telling the ingress when its drain starts (readiness off, and the
    refusal of what is still held once `ingress_drain` has passed)."""

    def __init__(self, config: uvicorn.Config, ingress: Ingress) -> None:
        super().__init__(config)
        self.ingress = ingress

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.ingress.begin_drain()
        await super().shutdown(sockets)
