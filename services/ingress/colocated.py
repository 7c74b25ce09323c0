"""The router, and a provider worker, inside the ingress process (SWITCHYARD_ROUTER_MODE=ingress,
SWITCHYARD_WORKER_MODE=ingress).

Why: every hop between processes costs a message parse, an event-loop turn and a context
switch on a shared core (docs/performance.md, "What stands in the way"). Run in the ingress's
own process, the router takes each InvokeRequest by a direct call (`Router.accept`) instead of
through `llm.invoke`: one hop, one message and one protobuf encode and decode fewer per
request, and no router process to schedule.

What does not change: the router is the same `services.router.main.Router`, with its own NATS
connection as the router's bus user (its permissions, not the ingress's: hand-offs, rejected
completions, budget leases; the stats batches, quota and pressure readings, worker beats,
cancels and `ingress.refused` it subscribes to), so ranking, health, budget leases and the
per-request authorization, hedging, the response cache, downgrades, the liveness watch and its
metrics all work as in a router process. It answers on the ingress's reply subject, over the
bus as before (the error and cache-hit frames, as the workers' frames do). It does not join
the `router` queue group on `llm.invoke`: each ingress routes its own requests, and several
ingress replicas are several routers, each with its own leases (docs/budgets.md, "Leases").

The trade: routers no longer scale apart from the ingress (docs/architecture.md, "Where the
router runs").

The worker in the ingress (`LocalWorker`) is the same `ProviderWorker`, connected as the
workers' bus user: it joins each pool's queue group as any worker does (other routers, a
failover, a drain's hand-over reach it there), beats, hears cancels and records every request
in the events stream. What it saves: the router in this process hands it a request by a direct
call (`HandOff.local_pools`, no hand-off message; the pool on the bus when it is full or
draining), and its frames to this ingress's inbox are handed over in the process
(switchyard/inproc.py), not sent through nats-server and back. With both in the ingress a plain
request's own bus traffic is its completion record and that record's acknowledgement. The
trade, beyond the router's: workers no longer scale apart from the ingress, and the provider
keys are in the ingress process, the one that faces clients (docs/architecture.md, "Where the
worker runs").
"""

from __future__ import annotations

from nats.aio.client import Client as NATS

from services.providers.execution import now_ms
from services.providers.inflight import InflightJournal, instance_name
from services.providers.main import ProviderWorker
from services.router.main import Router
from switchyard import bus
from switchyard.busauth import BusCredentials
from switchyard.catalog import Catalog
from switchyard.config import ConfigError
from switchyard.inproc import LocalInbox
from switchyard.lifecycle import started
from switchyard.settings import Settings
from switchyard.v1 import invoke_pb2

# The connection's name, as a router process's: nats-server's /connz (and bench.cpu's count
# of messages per service) tells the router's traffic from the ingress's.
CONNECTION_NAME = "switchyard-router"
WORKER_CONNECTION_NAME = "switchyard-providers"


class MissingRouterCredentials(ConfigError):
    """The bus requires users, and the ingress was not given the router's."""


class MissingWorkerCredentials(ConfigError):
    """The bus requires users, and the ingress was not given the workers'."""


class EmbeddedRouter(Router):
    """The router, connecting as the router's bus user from inside the ingress process."""

    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        # Refused when the ingress is built, before it connects anywhere: the ingress's own bus
        # user may not do the router's work (and must not be given its permissions).
        if settings.nats_user and settings.router_nats_credentials is None:
            raise MissingRouterCredentials(_missing("ROUTER", "router's"))
        super().__init__(settings, catalog, take_invokes=False)

    async def connect(self) -> NATS:
        self.nc = await _connect_as(self.settings, CONNECTION_NAME, self.settings.router_nats_credentials)
        return self.nc


class LocalRouter:
    """The ingress's own router: started in its lifespan, handed requests, drained last."""

    def __init__(self, settings: Settings, catalog: Catalog, inbox: LocalInbox) -> None:
        self.router = EmbeddedRouter(settings, catalog)
        self.router.local_inbox = inbox

    async def start(self, worker: LocalWorker | None = None) -> None:
        """Start it; with a worker in this process, its pools are asked first (no message)."""
        await self.router.start()
        if worker is not None:
            for provider in worker.worker.providers:
                self.router.handoff.local_pools[provider] = worker.worker.take

    async def hand_over(self, request: invoke_pb2.InvokeRequest, reply_to: str) -> None:
        """The request goes to the router in this process; its frames come to `reply_to`."""
        await self.router.accept(request, reply_to)

    async def drain(self) -> None:
        """After the ingress answered what it held: routing tasks finish, the liveness watch
        stops, budget leases go back, events are flushed, the router's connection drains."""
        self.router.draining = True
        await self.router.drain()


class EmbeddedWorker(ProviderWorker):
    """A provider worker for every configured pool, connecting as the workers' bus user from
    inside the ingress process."""

    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        if settings.nats_user and settings.worker_nats_credentials is None:
            raise MissingWorkerCredentials(_missing("WORKER", "workers'"))
        super().__init__(settings, catalog)

    async def connect(self) -> NATS:
        self.nc = await _connect_as(
            self.settings, WORKER_CONNECTION_NAME, self.settings.worker_nats_credentials
        )
        return self.nc


class LocalWorker:
    """The ingress's own provider worker: started in its lifespan before the router, drained
    after it (what it holds finishes, its records are flushed)."""

    def __init__(self, settings: Settings, catalog: Catalog, inbox: LocalInbox) -> None:
        self.worker = EmbeddedWorker(settings, catalog)
        self.worker.local_inbox = inbox

    async def start(self) -> None:
        """Start it, then record what a predecessor of this instance left in flight, and any
        other instance's stale journal (inflight.py); then journal what it holds."""
        worker, settings = self.worker, self.worker.settings
        await worker.start()
        journal = await InflightJournal.open(
            worker.bus.jetstream(),
            settings.stream_replicas,
            instance_name(settings.instance, settings.port),
            started(worker.events, "the event publisher"),
            settings.inflight_stale_s,
            settings.worker_beat_s,
        )
        await journal.adopt(now_ms(), at_start=True)
        journal.start_scans(now_ms)
        worker.journal = journal

    async def drain(self) -> None:
        self.worker.draining = True
        await self.worker.drain()


def _missing(role: str, whose: str) -> str:
    return (
        f"SWITCHYARD_{role}_MODE=ingress needs the {whose} bus user as well as the ingress's: set "
        f"SWITCHYARD_{role}_NATS_USER and SWITCHYARD_{role}_NATS_PASSWORD_FILE (switchyard up does)"
    )


async def _connect_as(settings: Settings, name: str, credentials: BusCredentials | None) -> NATS:
    """A connection of its own for a service in the ingress process, as its own bus user."""
    return await bus.connect(settings.nats_url, name, credentials, settings.nats_tls_ca_file)
