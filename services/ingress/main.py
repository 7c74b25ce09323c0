"""Ingress process: uvicorn (uvloop + httptools, guarded by connections.py) serving the Starlette app."""

from __future__ import annotations

import signal
import sys

import uvicorn

from switchyard.logs import UVICORN_LOGGING, setup_logging
from switchyard.settings import load_settings
from switchyard.telemetry import setup_tracing

from .app import Ingress
from .connections import guard_from, guarded_protocol


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
    uvicorn.run(
        ingress.app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=guarded_protocol(guard_from(settings)),  # httptools + connection limits, header deadline
        **UVICORN_LOGGING,
        timeout_graceful_shutdown=int(settings.drain_timeout_s),
        server_header=False,
    )
