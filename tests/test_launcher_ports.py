"""Servers we start on ports free_port chose, and a port taken between the choice and the bind.

free_port's port is free when it is chosen; the service binds it a second later, and in the
parallel suite another test's process can bind it in between. Its /readyz then answered for
ours (a CI run: the ledger "ready" while it had exited, the budget never ready behind it).
The launcher (switchyard/testing/stack.py) and NatsServer (which `switchyard up` uses too) now
ask the kernel who listens, and start the server again on new ports.
"""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from switchyard import natsserver
from switchyard.natsserver import NatsServer, PortTakenError, free_port
from switchyard.testing import stack as launcher
from switchyard.testing.stack import Stack, owns_listener, running

pytestmark = pytest.mark.timeout(180)


class AlwaysReady(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def squatter() -> Iterator[int]:
    """Another process's ops server, as far as a readiness poll can tell: 200 on any GET."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AlwaysReady)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_owns_listener_tells_whose_socket_listens() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            assert owns_listener(os.getpid(), port) is True
            assert owns_listener(child.pid, port) is False
        finally:
            child.kill()
            child.wait()
    assert owns_listener(os.getpid(), port) is False  # closed: nobody listens


def test_a_service_whose_port_was_taken_starts_again_on_another(
    squatter: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    handed = iter([squatter])  # the first port the launcher picks is the squatter's
    monkeypatch.setattr(launcher, "free_port", lambda: next(handed, None) or free_port())
    with running(Stack.create(Path(tempfile.mkdtemp(prefix="switchyard-ports-")))) as stack:
        worker = stack.spawn("worker-demo", "services.providers", "--provider", "demo")
        assert worker.ports[0] != squatter
        assert owns_listener(worker.process.pid, worker.ports[0]) is True
        assert httpx.get(worker.ready_url, timeout=5).status_code == 200
        assert "a port was taken by another process" in worker.log()
        assert "address already in use" in worker.log().lower()  # what the first one died of
        assert worker.process.poll() is None


def test_nats_whose_monitoring_port_is_taken_at_the_check_starts_on_another(
    squatter: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    handed = iter([free_port(), squatter])  # client port, then the squatter's as monitoring port
    monkeypatch.setattr(natsserver, "free_port", lambda host="": next(handed, None) or free_port())
    server = NatsServer(store_dir=tmp_path).start()
    try:
        assert server.monitor_port != squatter
        assert server.process is not None and owns_listener(server.process.pid, server.monitor_port)
    finally:
        server.stop()


def test_nats_whose_monitoring_port_is_taken_after_the_check_starts_on_another(
    squatter: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The check passed and nats-server then could not bind: it exits, and is started again.
    (Whether the squatter's 200 on /healthz could pass for ours first depends on how fast
    nats-server exits; owns_listener's own test covers the check that rules it out.)"""
    handed = iter([free_port(), squatter])
    monkeypatch.setattr(natsserver, "free_port", lambda host="": next(handed, None) or free_port())
    monkeypatch.setattr(natsserver, "port_taken", lambda port, host="": False)
    server = NatsServer(store_dir=tmp_path).start()
    try:
        assert server.monitor_port != squatter
        assert server.process is not None and server.process.poll() is None
        assert owns_listener(server.process.pid, server.monitor_port)
    finally:
        server.stop()


def test_nats_on_a_port_given_and_taken_is_refused(squatter: int, tmp_path: Path) -> None:
    with pytest.raises(PortTakenError):
        NatsServer(store_dir=tmp_path, monitor_port=squatter).start()


def test_switchyard_up_does_not_take_another_programs_ready_for_its_childs(
    squatter: int, tmp_path: Path
) -> None:
    """`switchyard up` (switchyard/supervisor.py) waits for each child's /readyz: a child
    whose port another program bound first is not ready, whoever answers there."""
    from switchyard.settings import Settings
    from switchyard.supervisor import Child
    from switchyard.supervisor import Stack as Supervised

    child = Child("ledger", [sys.executable, "-c", "import time; time.sleep(30)"], dict(os.environ),
                  f"http://127.0.0.1:{squatter}/readyz")  # fmt: skip
    supervised = Supervised(Settings(data_dir=tmp_path), children=[child])
    child.start()
    try:
        with pytest.raises(TimeoutError, match="ledger"):
            supervised.wait_ready(1.0)
    finally:
        child.started_process.kill()
        child.started_process.wait()


# A service as far as the supervisor can tell: /readyz on SWITCHYARD_OPS_PORT, or exit 1 when
# that port is taken (as a service's ops server does).
OPS_SERVER = """
import http.server, os, sys
class Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *args):
        pass
try:
    server = http.server.HTTPServer(("127.0.0.1", int(os.environ["SWITCHYARD_OPS_PORT"])), Ready)
except OSError:
    sys.exit(1)
server.serve_forever()
"""


def test_switchyard_up_starts_a_child_whose_port_was_taken_again_on_another(
    squatter: int, tmp_path: Path
) -> None:
    """The supervisor chose the ops port; another program bound it first, so the child could not
    and exited. It is started again on a new port (the test launcher does the same), not
    reported as a failed start; a port the operator gave is never changed."""
    from switchyard.settings import Settings
    from switchyard.supervisor import Child
    from switchyard.supervisor import Stack as Supervised

    def child(port_key: str) -> Child:
        env = dict(os.environ, SWITCHYARD_OPS_PORT=str(squatter))
        return Child("ledger", [sys.executable, "-c", OPS_SERVER], env, f"http://127.0.0.1:{squatter}/readyz",
                     port_key=port_key)  # fmt: skip

    chosen = child("SWITCHYARD_OPS_PORT")
    supervised = Supervised(Settings(data_dir=tmp_path), children=[chosen])
    chosen.start()
    try:
        supervised.wait_ready(30.0)
        moved_to = int(chosen.env["SWITCHYARD_OPS_PORT"])
        assert moved_to != squatter and chosen.ready_url == f"http://127.0.0.1:{moved_to}/readyz"
        assert chosen.alive and owns_listener(chosen.started_process.pid, moved_to)
    finally:
        chosen.started_process.kill()
        chosen.started_process.wait()

    given = child("")
    supervised = Supervised(Settings(data_dir=tmp_path), children=[given])
    given.start()
    with pytest.raises(RuntimeError, match="ledger exited with 1 during start-up"):
        supervised.wait_ready(30.0)
    assert given.env["SWITCHYARD_OPS_PORT"] == str(squatter)
