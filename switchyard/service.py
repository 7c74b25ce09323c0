"""The life of a service process: start, report ready, drain on SIGTERM, exit.

Every NATS service (router, providers, ledger, budget) is a `BusService`; `run()` gives it
logging with redaction, tracing, an ops server (/healthz, /readyz, /metrics) and signal
handling, on uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from abc import ABC, abstractmethod
from collections.abc import Callable

import uvloop
from nats.aio.client import Client as NATS

from switchyard import bus
from switchyard.catalog import Catalog, load_catalog
from switchyard.config import ConfigError
from switchyard.lifecycle import started
from switchyard.logs import register_secret, setup_logging
from switchyard.ops import OpsServer
from switchyard.settings import Settings, load_settings
from switchyard.telemetry import setup_tracing, shutdown_tracing


class BusService(ABC):
    """A NATS-connected service. Subclasses subscribe in `start` and finish work in `drain`."""

    name: str = "service"

    def __init__(self, settings: Settings, catalog: Catalog | None = None) -> None:
        self.settings = settings
        self.catalog = catalog if catalog is not None else load_service_catalog(settings)
        self.log = logging.getLogger(f"switchyard.{self.name}")
        self.nc: NATS | None = None
        self.ready = False
        self.draining = False

    @property
    def bus(self) -> NATS:
        """The NATS connection `start()` made (NotStartedError before then)."""
        return started(self.nc, f"{self.name}: the bus connection")

    async def connect(self) -> NATS:
        self.nc = await bus.connect(
            self.settings.nats_url,
            f"switchyard-{self.name}",
            self.settings.nats_credentials,
            self.settings.nats_tls_ca_file,
        )
        return self.nc

    @abstractmethod
    async def start(self) -> None:
        """Connect and subscribe; set `self.ready` when work can be taken."""

    async def drain(self) -> None:
        """Stop taking work, finish what is in flight (bounded), close connections."""
        if self.nc and not self.nc.is_closed:
            with contextlib.suppress(*bus.NATS_ERRORS):
                await asyncio.wait_for(self.nc.drain(), self.settings.drain_timeout_s)

    def is_ready(self) -> bool:
        return self.ready and not self.draining


def load_service_catalog(settings: Settings) -> Catalog:
    import os

    catalog = load_catalog(settings.config_file, os.environ)
    for dep in catalog.deployments.values():
        register_secret(dep.api_key)
    return catalog


async def serve(service: BusService) -> None:
    settings = service.settings
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ops = OpsServer(settings.ops_host, settings.ops_port, service.is_ready)
    await ops.start()
    await service.start()
    service.log.info("ready (ops http://%s:%d)", settings.ops_host, ops.port)
    await stop.wait()
    service.log.info("draining")
    service.draining = True
    await service.drain()
    await ops.stop()
    shutdown_tracing()
    service.log.info("stopped")


def run(name: str, factory: Callable[[Settings], BusService]) -> None:
    """Entry point of a service process: `run("router", Router)`."""
    settings = load_settings()
    setup_logging(name, settings.log_level, settings.log_json)
    setup_tracing(name, span_dir=settings.span_dir)
    try:
        service = factory(settings)
    except ConfigError as exc:  # a config that cannot run: say what is wrong, no stack trace
        logging.getLogger(f"switchyard.{name}").error("bad config: %s", exc)
        raise SystemExit(2) from None
    uvloop.run(serve(service))
