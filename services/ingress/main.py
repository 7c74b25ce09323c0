"""Ingress process: uvicorn (uvloop + httptools) serving the Starlette app."""

from __future__ import annotations

import uvicorn

from switchyard.logs import setup_logging
from switchyard.settings import load_settings
from switchyard.telemetry import setup_tracing

from .app import Ingress


def main() -> None:
    settings = load_settings()
    setup_logging("ingress", settings.log_level, settings.log_json)
    setup_tracing("ingress", span_dir=settings.span_dir)
    ingress = Ingress(settings)
    uvicorn.run(
        ingress.app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=int(settings.drain_timeout_s),
        server_header=False,
    )
