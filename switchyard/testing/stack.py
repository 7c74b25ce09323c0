"""Start Switchyard services as real processes against a real NATS server: the launcher of
the test suite and of the benchmarks (bench/), which is why it lives in the package."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import nats
import orjson

from switchyard import busauth, subjects
from switchyard.children import tied_to_parent
from switchyard.natsserver import PORT_ATTEMPTS, NatsServer, free_port, owns_listener
from switchyard.tenancy import dashboard_token

ROOT = Path(__file__).resolve().parents[2]
# Each test stack's admin token by its NATS URL, for ledger_sql (the ledger's SQL subject
# answers only the admin token).
ADMIN_TOKENS: dict[str, str] = {}
# SWITCHYARD_ROUTER_MODE=ingress: the ingress runs the router, start_all starts no router process.
ROUTER_MODE = "SWITCHYARD_ROUTER_MODE"
# Its values, for tests that hold in both (pytest.mark.parametrize("router_mode", ROUTER_MODES)).
ROUTER_MODES = ("service", "ingress")
# SWITCHYARD_WORKER_MODE=ingress: the ingress runs a provider worker too, start_all starts none.
WORKER_MODE = "SWITCHYARD_WORKER_MODE"
T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], timeout_s: float = 10.0, interval_s: float = 0.05, what: str = "condition"
) -> T:
    """The predicate's first truthy value. An assertion or HTTP error inside it counts as
    "not yet" (a service may not answer while it starts); the last one is in the timeout."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = result = predicate()
        except (AssertionError, httpx.HTTPError) as exc:
            last = exc
        else:
            if result:
                return result
        time.sleep(interval_s)
    raise TimeoutError(f"timed out waiting for {what} (last: {last!r})")


@contextlib.contextmanager
def running(stack: Stack) -> Iterator[Stack]:
    """Hold a test stack for the `with` body: its logs are printed if starting it fails, and it
    is always stopped and its folder removed."""
    try:
        yield stack
    except Exception:
        print(stack.logs())
        raise
    finally:
        stack.stop()
        shutil.rmtree(stack.workdir, ignore_errors=True)


# How a service says a port was taken (asyncio's and uvicorn's bind errors, lowercased).
PORT_TAKEN = "address already in use"


class PortTaken(Exception):
    """A port the launcher chose for a service was bound by another process first."""


@dataclass
class ServiceProc:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)
    # The settings naming the ports it listens on (the first answers /readyz), and those of
    # them whose port the launcher chose (and may choose again: Stack.wait_ready).
    port_keys: tuple[str, ...] = ("SWITCHYARD_OPS_PORT",)
    chosen_ports: tuple[str, ...] = ()
    log_start: int = 0  # where its current process's lines begin in the log

    @property
    def ports(self) -> list[int]:
        return [int(self.env[key]) for key in self.port_keys]

    @property
    def ready_url(self) -> str:
        return f"http://127.0.0.1:{self.ports[0]}/readyz"

    @property
    def metrics_url(self) -> str:
        return self.ready_url.removesuffix("/readyz") + "/metrics"

    def log(self, since_launch: bool = False) -> str:
        """Its log; `since_launch`: only what its current process wrote (Stack relaunches)."""
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as log:
            log.seek(self.log_start if since_launch else 0)
            return log.read().decode(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.wait_or_kill(timeout_s)
        return self.process.returncode

    def wait_or_kill(self, timeout_s: float = 15.0) -> int:
        """Wait for the process to exit; SIGKILL it after `timeout_s`."""
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return self.process.returncode


@dataclass
class Stack:
    """A NATS server plus any set of service processes, all on loopback, in a temp folder."""

    workdir: Path
    nats: NatsServer
    env: dict[str, str] = field(default_factory=dict)
    services: list[ServiceProc] = field(default_factory=list)
    ingress_url: str = ""
    api_key: str = ""  # a key of project "default", provisioned by start_all (or provision)
    dashboard_url: str = ""
    bus_dir: Path | None = None  # the bus users' passwords (busauth); services get their own

    @property
    def admin_token(self) -> str:
        return self.env["SWITCHYARD_ADMIN_TOKEN"]

    @property
    def dashboard_headers(self) -> dict[str, str]:
        """Send these with dashboard reads (the dashboard needs a login, docs/observability.md)."""
        return {"authorization": f"Bearer {dashboard_token(self.admin_token)}"}

    @property
    def dashboard_login_url(self) -> str:
        """What a browser opens: logs it in with a cookie and redirects to the page."""
        return f"{self.dashboard_url}/login?token={dashboard_token(self.admin_token)}"

    @property
    def headers(self) -> dict[str, str]:
        """Send these with every API call: `httpx.AsyncClient(..., headers=stack.headers)`."""
        return {"authorization": f"Bearer {self.api_key}"}

    @classmethod
    def create(cls, workdir: Path, **env: str) -> Stack:
        bus_dir = workdir / "bus"
        passwords = busauth.load_or_create_passwords(bus_dir)
        # `server.url` carries the admin user, for the tests' own look at the bus.
        server = NatsServer(
            store_dir=workdir / "nats", passwords=passwords, client_role=busauth.ADMIN
        ).start()
        env = cls.base_env(server.address, workdir, **env)
        return cls(workdir=workdir, nats=server, env=env, bus_dir=bus_dir)

    @staticmethod
    def base_env(nats_url: str, workdir: Path, **env: str) -> dict[str, str]:
        """The environment every service of a test stack gets: no SWITCHYARD_* leaking in
        from the caller's shell, a fresh admin token, the stack's NATS and data folder."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
        base.update(
            SWITCHYARD_NATS_URL=nats_url,
            SWITCHYARD_DATA_DIR=str(workdir / "data"),
            SWITCHYARD_LOG_LEVEL="INFO",
            SWITCHYARD_ADMIN_TOKEN=secrets.token_urlsafe(24),
            # Adaptive admission sheds when the gateway's own latency rises, and on a shared
            # test machine it does: tests that send many requests at once (budget exactness,
            # chaos) must see every one served. tests/test_admission.py turns it on.
            SWITCHYARD_ADMISSION_ADAPTIVE="false",
            PYTHONUNBUFFERED="1",
        )
        base.update(env)
        ADMIN_TOKENS[_without_credentials(nats_url)] = base["SWITCHYARD_ADMIN_TOKEN"]
        return base

    def spawn(self, name: str, module: str, *args: str, wait: bool = True, **env: str) -> ServiceProc:
        log_path = self.workdir / f"{name}-{len(self.services)}.log"
        role = busauth.role_of_module(module)
        creds = busauth.service_env(self.bus_dir, role) if self.bus_dir and role else {}
        proc_env = dict(self.env, **creds, **env)
        if module == "services.ingress" and self.bus_dir and proc_env.get(ROUTER_MODE) == "ingress":
            proc_env.update(busauth.embedded_router_env(self.bus_dir))  # it runs the router itself
        if module == "services.ingress" and self.bus_dir and proc_env.get(WORKER_MODE) == "ingress":
            proc_env.update(busauth.embedded_worker_env(self.bus_dir))  # it calls the providers itself
        # The ports this process listens on, by setting: the first answers /readyz.
        port_keys = ["SWITCHYARD_PORT"] if module == "services.ingress" else ["SWITCHYARD_OPS_PORT"]
        if module == "services.ledger":  # the ledger serves the dashboard too
            port_keys.append("SWITCHYARD_DASHBOARD_PORT")
        # The ops port is always the launcher's; the API's and the dashboard's may be given.
        chosen = tuple(key for key in port_keys if key == "SWITCHYARD_OPS_PORT" or not proc_env.get(key))
        for key in chosen:
            proc_env[key] = str(free_port())
        argv = [sys.executable, "-m", module, *args]
        service = ServiceProc(name, self._launch(argv, proc_env, log_path), log_path, proc_env, argv)
        service.port_keys, service.chosen_ports = tuple(port_keys), chosen
        for attr, url in self._urls_of(service).items():  # the newest ingress's, the ledger's
            setattr(self, attr, url)
        self.services.append(service)
        if wait:
            self.wait_ready(service)
        return service

    @staticmethod
    def _launch(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as out:
            return subprocess.Popen(
                argv,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                preexec_fn=tied_to_parent(),  # a test killed by its timeout leaves no orphans
            )

    @staticmethod
    def _urls_of(service: ServiceProc) -> dict[str, str]:
        """The stack's URLs this service serves, by attribute: the ingress's, the dashboard's."""
        urls = {}
        if "SWITCHYARD_PORT" in service.port_keys:
            urls["ingress_url"] = f"http://127.0.0.1:{service.env['SWITCHYARD_PORT']}"
        if "SWITCHYARD_DASHBOARD_PORT" in service.port_keys:
            urls["dashboard_url"] = f"http://127.0.0.1:{service.env['SWITCHYARD_DASHBOARD_PORT']}"
        return urls

    def _relaunch_on_new_ports(self, service: ServiceProc) -> None:
        """Start `service` again on fresh ports: a port free_port handed out was taken by
        another process (a parallel test's) before the service could bind it."""
        if service.process.poll() is None:
            service.process.kill()
            service.process.wait()
        before = self._urls_of(service)
        for key in service.chosen_ports:
            service.env[key] = str(free_port())
        with open(service.log_path, "ab") as out:
            out.write(f"--- {service.name}: a port was taken by another process; starting again\n".encode())
        service.log_start = service.log_path.stat().st_size
        service.process = self._launch(service.argv, service.env, service.log_path)
        for attr, url in self._urls_of(service).items():
            if getattr(self, attr) == before[attr]:  # the stack's URL was this service's
                setattr(self, attr, url)

    def wait_ready(self, service: ServiceProc, timeout_s: float = 90.0) -> None:
        """Until `service` answers /readyz with 200 from its own socket on every port it listens
        on. A port another process took first (free_port's window: see owns_listener) starts
        the service again on new ports, if the launcher chose them; never a false "ready"."""

        def ready() -> bool:
            if service.process.poll() is not None:
                if service.chosen_ports and PORT_TAKEN in service.log(since_launch=True).lower():
                    raise PortTaken(service.name)
                raise RuntimeError(f"{service.name} exited {service.process.returncode}:\n{service.log()}")
            try:
                if httpx.get(service.ready_url, timeout=0.5).status_code != 200:
                    return False
            except httpx.HTTPError:
                return False
            # (A port given as 0 is the service's own pick: nothing to check it against.)
            owned = [owns_listener(service.process.pid, port) if port else None for port in service.ports]
            if owned[0] is False:
                return False  # another process's /readyz: ours cannot bind it and will exit
            if False in owned and service.chosen_ports:
                raise PortTaken(service.name)  # ready, but without a port it should serve
            return True

        for attempt in range(PORT_ATTEMPTS):
            try:
                wait_until(ready, timeout_s, what=f"{service.name} ready")
                return
            except PortTaken:
                if attempt == PORT_ATTEMPTS - 1:
                    raise
                self._relaunch_on_new_ports(service)
            except TimeoutError as exc:  # its log in the error: the suite's summary shows the cause
                raise TimeoutError(f"{exc}; its log ends:\n{service.log()[-3000:]}") from None

    def start(self, *specs: tuple[str, ...], ready_timeout_s: float = 90.0) -> Stack:
        """Spawn every `(name, module, *args)` at once, then wait until each is ready (the
        generous default: several processes start together on a machine others may load)."""
        started = [self.spawn(name, module, *args, wait=False) for name, module, *args in specs]
        for service in started:
            self.wait_ready(service, ready_timeout_s)
        return self

    def start_all(self, providers: tuple[str, ...] = ("demo",), ready_timeout_s: float = 90.0) -> Stack:
        """Every service, one process each, started together, and a key for project default."""
        self.start(
            ("ledger", "services.ledger"),
            ("budget", "services.budget"),
            *self.workers(providers),
            *self.routers(),
            ("ingress", "services.ingress"),
            ready_timeout_s=ready_timeout_s,
        )
        self.provision()
        return self

    @property
    def router_mode(self) -> str:
        """Where this stack routes (SWITCHYARD_ROUTER_MODE): "service" or "ingress"."""
        return self.env.get(ROUTER_MODE) or "service"

    def workers(self, providers: Sequence[str]) -> list[tuple[str, ...]]:
        """Specs for `start`: a worker process per provider pool, or none when each ingress
        runs a worker for every pool itself (SWITCHYARD_WORKER_MODE=ingress)."""
        if self.env.get(WORKER_MODE) == "ingress":
            return []
        return [(f"worker-{p}", "services.providers", "--provider", p) for p in providers]

    def routers(self, *names: str) -> list[tuple[str, str]]:
        """Specs for `start`: a router process per name (one, "router", by default), or none
        when each ingress runs the router itself (SWITCHYARD_ROUTER_MODE=ingress)."""
        if self.router_mode == "ingress":
            return []
        return [(name, "services.router") for name in names or ("router",)]

    def ingress_urls(self) -> list[str]:
        """The base URL of every running ingress process, oldest first."""
        running = [s for s in self.services if s.process.poll() is None]
        # An ingress is ready on its HTTP port (SWITCHYARD_PORT); every other service on an ops port.
        return [
            f"http://127.0.0.1:{s.env['SWITCHYARD_PORT']}"
            for s in running
            if s.env.get("SWITCHYARD_PORT") and s.ready_url.endswith(f":{s.env['SWITCHYARD_PORT']}/readyz")
        ]

    def budget_leader(self) -> ServiceProc | None:
        """The budget process holding the lease (its holder id carries its pid), if one leads."""
        r = self.admin("GET", "/spend")
        if r.status_code != 200:
            return None
        pid = int(r.json()["leader"].split(":")[1])
        return next((s for s in self.by_name("budget") if s.process.pid == pid), None)

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A call to the ingress's admin API with the stack's admin token."""
        headers = {"authorization": f"Bearer {self.admin_token}"}
        return httpx.request(
            method, f"{self.ingress_url}/admin/v1{path}", headers=headers, timeout=10, **kwargs
        )

    def provision(self, project: str = "default", **key: object) -> str:
        """Create the project (if new) and an API key for it; the first becomes `api_key`."""
        r = self.admin("POST", "/projects", json={"id": project})
        assert r.status_code in (201, 409), r.text
        r = self.admin("POST", "/keys", json={"project": project, **key})
        assert r.status_code == 201, r.text
        secret = r.json()["key"]
        self.api_key = self.api_key or secret
        return secret

    def by_name(self, name: str) -> list[ServiceProc]:
        return [s for s in self.services if s.name == name and s.process.poll() is None]

    def stop(self) -> None:
        """SIGTERM to every service at once, wait for them all, then stop NATS. One after another
        took ~0.5 s longer per stack (each drains for 0.1 to 0.3 s), on every test's teardown."""
        live = [s for s in reversed(self.services) if s.process.poll() is None]
        for service in live:
            service.process.send_signal(signal.SIGTERM)
        for service in live:
            service.wait_or_kill()
        self.nats.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {s.name}\n{s.log()[-3000:]}" for s in self.services)


def _without_credentials(nats_url: str) -> str:
    """The stack's key in ADMIN_TOKENS: services get the bare address, the tests' own
    connections the admin user's URL (user:password@host); both name one stack."""
    parts = urlsplit(nats_url.split(",")[0])
    return f"{parts.scheme}://{parts.hostname}:{parts.port}"


async def ledger_sql(
    nats_url: str, sql: str, params: dict | None = None, admin_token: str | None = None
) -> list[dict]:
    """Analyst SQL on the ledger (`ledger.sql`), with the stack's admin token by default."""
    token = ADMIN_TOKENS.get(_without_credentials(nats_url), "") if admin_token is None else admin_token
    nc = await nats.connect(servers=nats_url.split(","))
    try:
        reply = await nc.request(
            subjects.LEDGER_SQL,
            orjson.dumps({"sql": sql, "params": params or {}}),
            timeout=10,
            headers={"Authorization": f"Bearer {token}"},
        )
    finally:
        await nc.close()
    result = orjson.loads(reply.data)
    if "error" in result:
        raise RuntimeError(result["error"])
    return [dict(zip(result["columns"], row, strict=True)) for row in result["rows"]]


async def wait_for_rows(
    nats_url: str, sql: str, count: int, params: dict | None = None, timeout_s: float = 15.0
) -> list[dict]:
    import asyncio

    deadline = time.monotonic() + timeout_s
    rows: list[dict] = []
    while time.monotonic() < deadline:
        rows = await ledger_sql(nats_url, sql, params)
        if len(rows) >= count:
            return rows
        await asyncio.sleep(0.1)
    raise TimeoutError(f"expected {count} rows, found {len(rows)}: {sql}")
