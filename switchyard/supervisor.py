"""`switchyard up`: NATS plus every service as its own child process, supervised.

Starts nats-server (JetStream, files under the data folder), then the ledger, budget,
provider workers, router (none with SWITCHYARD_ROUTER_MODE=ingress: the ingress runs it) and
ingress; waits until each reports ready; prints the URLs;
restarts a child that crashes; and on Ctrl-C / SIGTERM stops the services first (so they
drain into NATS), NATS last, leaving nothing running.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from switchyard import busauth
from switchyard.catalog import load_catalog
from switchyard.children import die_with_parent
from switchyard.lifecycle import started
from switchyard.natsserver import (
    PORT_ATTEMPTS,
    NatsServer,
    PortTakenError,
    free_port,
    port_taken,
    serves_port,
)
from switchyard.settings import Settings
from switchyard.tasks import awaiting, cancel_and_wait
from switchyard.tenancy import dashboard_token
from switchyard.tenancy_store import ADMIN_TOKEN_FILE, bootstrap_default, load_or_create_admin_token

RESTART_BACKOFF_MAX_S = 10.0
# The first-start set-up on the bus (the default project, the development key) takes well under
# a second; past this, `up` stops and says where it waited instead of hanging without a word.
# Seen once: stopping its tenancy watch hung, a cancel swallowed by Python 3.11's wait_for (now
# switchyard/tasks.py); this bounds whatever else could.
BOOTSTRAP_TIMEOUT_S = 30.0
BUS_DIR = "bus"


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    ready_url: str
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_restart: float = 0.0
    log_path: Path | None = None
    # The environment key of the port the supervisor chose for it ("" = a port the operator
    # gave, never changed here); chosen again when another program bound it first.
    port_key: str = ""
    port_attempts: int = 1

    def start(self) -> None:
        out = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=True,  # terminal signals reach only the supervisor, which orders the stop
            preexec_fn=die_with_parent,
        )

    @property
    def started_process(self) -> subprocess.Popen[bytes]:
        return started(self.process, f"{self.name}'s process")

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def lost_its_port(self) -> bool:
        """It exited, and another program listens on the port chosen for it: that is why (it
        could not bind), and a free port now is worth one more start."""
        port = urlsplit(self.ready_url).port
        return bool(self.port_key) and not self.alive and port is not None and port_taken(port)

    def start_on_a_new_port(self) -> bool:
        """Start it again on a newly chosen port (PORT_ATTEMPTS in all); False when it may not."""
        if not self.port_key or self.port_attempts >= PORT_ATTEMPTS:
            return False
        old = urlsplit(self.ready_url)
        port = free_port()
        self.env[self.port_key] = str(port)
        self.ready_url = old._replace(netloc=f"{old.hostname}:{port}").geturl()
        self.port_attempts += 1
        self.start()
        return True

    def answers_itself(self) -> bool:
        """Its readiness port is its own socket: the free port chosen for it may have been
        bound by another program first, whose 200 is not this child's (it exits instead)."""
        port = urlsplit(self.ready_url).port
        return port is not None and serves_port(self.process, port)


@dataclass
class Stack:
    settings: Settings
    nats_port: int = 4222
    nats_monitor_port: int = 8222
    log_dir: Path | None = None
    children: list[Child] = field(default_factory=list)
    nats: NatsServer | None = None
    stopping: bool = False
    # The signal that asked `switchyard up` to stop while starting ("" until one does): the
    # start-up's waits raise StopDuringStart on it (see up()).
    stop_asked: str = ""
    dev_key: str = ""

    @property
    def dashboard_port(self) -> int:
        """The dashboard's port (served by the ledger); 0 in the settings picks a free one once."""
        if not self.settings.dashboard_port:
            self.settings.dashboard_port = free_port()
        return self.settings.dashboard_port

    @property
    def bus_dir(self) -> Path:
        """The bus users' passwords (0600 files) and nothing else: docs/reliability.md."""
        return self.settings.data_dir.resolve() / BUS_DIR

    def plan(self) -> list[Child]:
        data_dir = self.settings.data_dir.resolve()
        # The operator's own bus credentials (say, for `switchyard sql`) are not the children's.
        base_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SWITCHYARD_NATS_USER", "SWITCHYARD_NATS_PASSWORD"))
        }
        base_env.update(
            SWITCHYARD_DATA_DIR=str(data_dir),
            SWITCHYARD_NATS_URL=self.nats.address if self.nats else self.settings.nats_url,
            PYTHONUNBUFFERED="1",
        )
        catalog = load_catalog(self.settings.config_file, os.environ)
        specs: list[tuple[str, str, list[str], dict[str, str]]] = [
            (
                "ledger",
                busauth.LEDGER,
                ["-m", "services.ledger"],
                {"SWITCHYARD_DASHBOARD_PORT": str(self.dashboard_port)},
            ),
            ("budget", busauth.BUDGET, ["-m", "services.budget"], {}),
        ]
        embedded_worker = self.settings.worker_mode == "ingress"
        for provider in [] if embedded_worker else catalog.providers():  # else the ingress calls them
            argv = ["-m", "services.providers", "--provider", provider]
            specs.append((f"providers-{provider}", busauth.PROVIDERS, argv, {}))
        embedded_router = self.settings.router_mode == "ingress"
        if not embedded_router:  # else each ingress routes its own requests (docs/architecture.md)
            specs.append(("router", busauth.ROUTER, ["-m", "services.router"], {}))
        children = []
        for name, role, argv, extra in specs:
            ops_port = free_port()
            creds = busauth.service_env(self.bus_dir, role)
            env = dict(base_env, SWITCHYARD_OPS_PORT=str(ops_port), **creds, **extra)
            ready_url = f"http://127.0.0.1:{ops_port}/readyz"
            children.append(
                Child(name, [sys.executable, *argv], env, ready_url, port_key="SWITCHYARD_OPS_PORT")
            )
        ingress_env = dict(
            base_env,
            SWITCHYARD_PORT=str(self.settings.port),
            SWITCHYARD_HOST=self.settings.host,
            **busauth.service_env(self.bus_dir, busauth.INGRESS),
            **(busauth.embedded_router_env(self.bus_dir) if embedded_router else {}),
            **(busauth.embedded_worker_env(self.bus_dir) if embedded_worker else {}),
        )
        children.append(
            Child(
                "ingress",
                [sys.executable, "-m", "services.ingress"],
                ingress_env,
                f"http://{self.settings.host}:{self.settings.port}/readyz",
            )
        )
        for child in children:
            child.log_path = (self.log_dir / f"{child.name}.log") if self.log_dir else None
        return children

    def taken_ports(self) -> list[str]:
        """The ports this stack must bind that another process already holds (a second stack
        on the same machine, say), each named: the stack refuses to start rather than join it."""
        wanted = [
            ("NATS", "127.0.0.1", self.nats_port),
            ("NATS monitoring", "127.0.0.1", self.nats_monitor_port),
            ("the API (SWITCHYARD_PORT)", self.settings.host, self.settings.port),
            ("the dashboard (SWITCHYARD_DASHBOARD_PORT)", self.settings.dashboard_host, self.dashboard_port),
        ]
        if self.settings.grpc_port:
            wanted.append(("gRPC (SWITCHYARD_GRPC_PORT)", self.settings.host, self.settings.grpc_port))
        return [f"{what} port {port} on {host}" for what, host, port in wanted if port_taken(port, host)]

    def start(self, timeout_s: float = 60.0) -> None:
        taken = self.taken_ports()
        if taken:
            raise PortTakenError(
                f"{'; '.join(taken)} already in use (another Switchyard running?). Stop it, or give "
                "this stack its own ports (SWITCHYARD_NATS_PORT=0 and SWITCHYARD_NATS_MONITOR_PORT=0 "
                "pick free ones; SWITCHYARD_PORT, SWITCHYARD_DASHBOARD_PORT)"
            )
        data_dir = self.settings.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        # One user per service, generated once into the data folder (switchyard/busauth.py).
        passwords = busauth.load_or_create_passwords(self.bus_dir)
        self.nats = NatsServer(
            store_dir=data_dir / "nats",
            port=self.nats_port,
            monitor_port=self.nats_monitor_port,
            passwords=passwords,
        ).start(log_file=(self.log_dir / "nats.log") if self.log_dir else None)
        load_or_create_admin_token(self.settings.configured_admin_token, data_dir)
        admin = busauth.credentials(self.bus_dir, busauth.ADMIN)
        self.dev_key = asyncio.run(
            bootstrap_within(
                BOOTSTRAP_TIMEOUT_S, self.nats.address, admin, data_dir, self.settings.stream_replicas
            )
        )
        self.stop_if_asked()
        self.children = self.plan()
        for child in self.children:
            child.start()
        self.wait_ready(timeout_s)

    def stop_if_asked(self) -> None:
        """Raise StopDuringStart if a signal asked to stop: its handler's own exception may
        have been dropped by Python (see up())."""
        if self.stop_asked:
            raise StopDuringStart(self.stop_asked)

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        waiting = list(self.children)
        with httpx.Client(timeout=0.5) as http:
            while waiting:
                self.stop_if_asked()
                if time.monotonic() > deadline:
                    names = ", ".join(c.name for c in waiting)
                    raise TimeoutError(f"not ready after {timeout_s:.0f}s: {names}")
                for child in list(waiting):
                    if not child.alive:
                        # Its free port was bound by another program before it could bind it.
                        if child.lost_its_port() and child.start_on_a_new_port():
                            print(
                                f"switchyard: {child.name}'s port was taken; starting it on another",
                                flush=True,
                            )
                            continue
                        raise RuntimeError(
                            f"{child.name} exited with {child.started_process.returncode} during start-up"
                        )
                    try:
                        if http.get(child.ready_url).status_code == 200 and child.answers_itself():
                            waiting.remove(child)
                    except httpx.HTTPError:
                        pass
                time.sleep(0.05)

    def supervise_once(self) -> None:
        """Restart any child that died, with exponential backoff per child."""
        now = time.monotonic()
        for child in self.children:
            if child.alive or self.stopping:
                continue
            if child.next_restart == 0.0:
                delay = min(0.5 * 2**child.restarts, RESTART_BACKOFF_MAX_S)
                child.next_restart = now + delay
                print(
                    f"switchyard: {child.name} exited ({child.started_process.returncode}); restarting in {delay:.1f}s",
                    flush=True,
                )
            elif now >= child.next_restart:
                child.restarts += 1
                child.next_restart = 0.0
                child.start()

    def stop(self, timeout_s: float = 15.0) -> None:
        self.stopping = True
        # Edge first (stop new work), then the middle, then the event consumers, NATS last.
        order = ["ingress", "router", "providers", "budget", "ledger"]
        for prefix in order:
            group = [c for c in self.children if c.name.startswith(prefix) and c.alive]
            for child in group:
                child.started_process.send_signal(signal.SIGTERM)
            # The ingress answers what it holds up to the request deadline (its drain), then
            # refuses the rest: wait that long for it, so a stream in flight completes.
            wait_s = self.settings.ingress_drain + timeout_s if prefix == "ingress" else timeout_s
            for child in group:
                try:
                    child.started_process.wait(wait_s)
                except subprocess.TimeoutExpired:
                    child.started_process.kill()
                    child.started_process.wait()
        if self.nats:
            self.nats.stop()

    def banner(self) -> str:
        base = f"http://{self.settings.host}:{self.settings.port}"
        return "\n".join(
            [
                "Switchyard is up.",
                f"  API (native)       {base}/llm.invoke",
                f"  OpenAI SDKs        base_url={base}/v1",
                f"  Anthropic SDKs     base_url={base}",
                f"  gRPC               {self._grpc_line()}",
                f"  dashboard          {self.dashboard_login_url()}",
                f"  health             {base}/healthz",
                f"  metrics            {base}/metrics",
                f"  NATS               {self.nats.address if self.nats else self.settings.nats_url}",
                f"  NATS users         {self.bus_dir} (one password file per service; admin.password)",
                f"  NATS monitoring    {self.nats.monitor_url if self.nats else ''}",
                f"  ledger             {self.settings.shown_ledger_dsn}",
                f"  data folder        {self.settings.data_dir.resolve()}",
                f"  admin API          {base}/admin/v1 (token: {self._admin_token_source()})",
                f"  API key (dev)      {self.dev_key or '(revoked: switchyard keys create --project default)'}",
                "Try:",
                f"  curl -s {base}/llm.invoke -H 'content-type: application/json' "
                f"-H 'authorization: Bearer {self.dev_key or '<key>'}' "
                '-d \'{"model":"auto","messages":[{"role":"user","content":"hello"}]}\'',
                "Ctrl-C stops everything.",
            ]
        )

    def _grpc_line(self) -> str:
        if self.settings.grpc_port:
            return f"{self.settings.host}:{self.settings.grpc_port} (switchyard.v1.Gateway, no TLS)"
        return "off (SWITCHYARD_GRPC_PORT=<port> make run turns it on)"

    def dashboard_login_url(self) -> str:
        """The dashboard link for the local operator: it logs the browser in (a cookie) with
        the read-only dashboard token, derived from the admin token (docs/observability.md)."""
        admin_token = load_or_create_admin_token(self.settings.configured_admin_token, self.settings.data_dir)
        host = self.settings.dashboard_host
        if host in ("0.0.0.0", "::", ""):  # every interface: the loopback name is in the allowlist
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.dashboard_port}/login?token={dashboard_token(admin_token)}"

    def _admin_token_source(self) -> str:
        if self.settings.admin_token_file:
            return str(self.settings.admin_token_file)
        if self.settings.admin_token:
            return "SWITCHYARD_ADMIN_TOKEN"
        return str(self.settings.data_dir.resolve() / ADMIN_TOKEN_FILE)


async def _bootstrap(nats_url: str, admin: busauth.BusCredentials, data_dir: Path, replicas: int) -> str:
    """The default project and the development key of a fresh data folder (docs/budgets.md)."""
    from switchyard.bus import connect

    nc = await connect(nats_url, "switchyard-supervisor", admin)
    try:
        return await bootstrap_default(nc.jetstream(), data_dir, replicas)
    finally:
        await nc.close()


async def bootstrap_within(
    timeout_s: float, nats_url: str, admin: busauth.BusCredentials, data_dir: Path, replicas: int
) -> str:
    """`_bootstrap`, given up after `timeout_s` with a TimeoutError that shows where it waited."""
    task = asyncio.create_task(_bootstrap(nats_url, admin, data_dir, replicas), name="bootstrap")
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if task in done:
        return task.result()
    where = awaiting(task.get_coro())
    await cancel_and_wait(task)
    raise TimeoutError(
        f"setting up the bus at {nats_url} took longer than {timeout_s:.0f} s; it waited in:\n{where}"
    )


class StopDuringStart(Exception):
    """Ctrl-C or SIGTERM reached `switchyard up` before the stack was ready (its signal's name)."""


def quiet_dropped_stops(
    previous: Callable[[sys.UnraisableHookArgs], object],
) -> Callable[[sys.UnraisableHookArgs], object]:
    """A sys.unraisablehook that says nothing of a StopDuringStart Python dropped (its signal
    handler ran where an exception cannot propagate: logging's at-fork hook while a child is
    forked). The stop is not lost: the handler recorded it and start-up's waits raise it
    (Stack.stop_if_asked). Anything else goes to `previous`, as before."""

    def hook(unraisable: sys.UnraisableHookArgs) -> object:
        if isinstance(unraisable.exc_value, StopDuringStart):
            return None
        return previous(unraisable)

    return hook


def up(settings: Settings) -> int:
    nats_port = int(os.environ.get("SWITCHYARD_NATS_PORT", "4222"))
    monitor_port = int(os.environ.get("SWITCHYARD_NATS_MONITOR_PORT", "8222"))
    log_dir_env = os.environ.get("SWITCHYARD_LOG_DIR")
    stack = Stack(
        settings,
        nats_port=nats_port or free_port(),
        nats_monitor_port=monitor_port or free_port(),
        log_dir=Path(log_dir_env) if log_dir_env else None,
    )
    if stack.log_dir:
        stack.log_dir.mkdir(parents=True, exist_ok=True)
    stop_requested = False
    starting = True

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True
        if starting and not stack.stop_asked:
            # Start-up waits (the bus set-up, every service's readiness) can last a minute: a
            # stop asked for meanwhile ends them at once, and what started is stopped below.
            # Raised once: a second Ctrl-C while that unwinds only asks again. Python drops an
            # exception raised where it cannot propagate (seen: in logging's at-fork hook while
            # a child was being started): then start-up's waits raise it on `stop_asked`, and
            # quiet_dropped_stops keeps Python's "Exception ignored" traceback off the terminal.
            stack.stop_asked = signal.Signals(signum).name
            raise StopDuringStart(stack.stop_asked)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    sys.unraisablehook = quiet_dropped_stops(sys.unraisablehook)
    try:
        stack.start()
        starting = False
        print(stack.banner(), flush=True)
        while not stop_requested:
            stack.supervise_once()
            time.sleep(0.2)
    except StopDuringStart as stop:
        print(f"switchyard: {stop} during start-up", flush=True)
    except Exception as exc:  # the CLI's process boundary: one line on stderr, exit 1, children stopped
        print(f"switchyard: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        print("switchyard: stopping", flush=True)
        stack.stop()
        print("switchyard: stopped", flush=True)
    return 0
