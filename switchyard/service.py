"""The life of a service process: start, report ready, drain on SIGTERM, exit.

Every NATS service (router, providers, ledger, budget) is a `BusService`; `run()` gives it
logging with redaction, tracing, an ops server (/healthz, /readyz, /metrics) and signal
handling, on uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from abc import ABC, abstractmethod
from collections.abc import Callable

import uvloop
from nats.aio.client import Client as NATS

from switchyard import bus
from switchyard.catalog import Catalog, load_catalog
from switchyard.config import ConfigError
from switchyard.inproc import LocalInbox
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
        # Set when this service runs inside an ingress process: frames for that ingress's
        # inbox are handed to it directly (switchyard/inproc.py), not sent over the bus.
        self.local_inbox: LocalInbox | None = None

    @property
    def bus(self) -> NATS:
        """The NATS connection `start()` made (NotStartedError before then)."""
        return started(self.nc, f"{self.name}: the bus connection")

    async def send_frame(self, reply_to: str, frame: bytes) -> None:
        """A reply frame (chunk, final, error) to the ingress waiting on `reply_to`: in this
        process when that ingress is here, else over the bus."""
        if self.local_inbox is not None and self.local_inbox.deliver(reply_to, frame):
            return
        await self.bus.publish(reply_to, frame)

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


async def serve(service: BusService) -> bool:
    """Run `service` until SIGTERM/SIGINT; False when the stop came during its start-up."""
    settings = service.settings
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ops = OpsServer(settings.ops_host, settings.ops_port, service.is_ready)
    await ops.start()
    # A stop during start-up (a ledger waiting for its store, a budget for its stream) must
    # not wait for the start to finish: whichever comes first wins, and a stop cancels the start.
    starting = asyncio.create_task(service.start(), name=f"{service.name}-start")
    stopping = asyncio.create_task(stop.wait(), name=f"{service.name}-stop")
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        # Cancelling cannot stop work a start handed to a thread (chDB opening or reconciling
        # a store): close the connection and report it; `run` then exits without waiting for it.
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(starting, 1.0)
        service.draining = True
        await BusService.drain(service)  # the subclass's drain expects a finished start
        await ops.stop()
        shutdown_tracing()
        service.log.info("stopped during start-up")
        return False
    starting.result()  # a start that failed raises here, as before
    service.log.info("ready (ops http://%s:%d)", settings.ops_host, ops.port)
    await stopping
    service.log.info("draining")
    service.draining = True
    await service.drain()
    await ops.stop()
    shutdown_tracing()
    service.log.info("stopped")
    return True


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
    if not uvloop.run(serve(service)):
        # Stopped during start-up: a thread the start left behind (a store still opening) would
        # keep the process alive at interpreter exit. Nothing was taken yet, so nothing is lost.
        logging.shutdown()
        os._exit(0)
