"""Fixtures, and the `stack` marker: `pytest -m "not stack"` runs the pure tests alone."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from switchyard.busauth import ADMIN, new_passwords
from switchyard.natsserver import NatsServer
from switchyard.testing.stack import Stack, running

# Compiled bytecode is cached (`__pycache__`, git-ignored) even where the environment says not
# to (PYTHONDONTWRITEBYTECODE, set on some machines): the suite starts a few hundred Python
# processes (every service of every test stack, the benchmarks, the fakes), and without the
# cache each compiles everything it imports again: 1.5-1.9 s of CPU to import a service's
# main module, 0.45-0.64 s from the cache (user+sys); test_quotas_stack 30 CPU-s without, 16
# with. The children inherit this environment. Caches are not compiled up front (`compileall`
# of the venv costs ~27 CPU-s; the first stack's processes compiling the same modules at once
# cost ~10, once).
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

# The suite talks gRPC (the ingress's gRPC API) in the same processes that start service
# processes. grpcio >= 1.80 with fork support on (its default) restarts its poller in a
# forked child, and `subprocess.Popen` with `preexec_fn` (the launchers tie each child to its
# parent) forks; the child's poller then finds its epoll descriptor closed before `exec` and
# aborts, so the service "exits -6" before it ran (grpc/grpc#43055; 33 of 150 children in a
# repro with a channel in use, none with this). Set before anything imports grpc. Production
# is not exposed: the supervisor, the one process that starts children, never loads grpc.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

# A test is a stack test when it uses one of these fixtures, or when its module imports
# anything from a module that starts processes (the launcher, nats-server, subprocess): so
# a new test file is marked without anyone remembering to.
STACK_FIXTURES = {"stack", "nats_server"}
PROCESS_MODULES = {
    "subprocess",
    "switchyard.natsserver",
    "switchyard.supervisor",
    "switchyard.testing.stack",
    "tests.support.budgets",
    "tests.support.cluster",
}


def _starts_processes(module: ModuleType) -> bool:
    for value in vars(module).values():
        origin = value.__name__ if isinstance(value, ModuleType) else getattr(value, "__module__", None)
        if origin in PROCESS_MODULES:
            return True
    return False


def _unique_node_ids(items: list[pytest.Item]) -> None:
    """schemathesis (4.32, tests/test_api_fuzz.py) gives every API operation's test the same
    node id under pytest 9 (its name says the operation, its id does not). pytest-xdist
    schedules by id: with the ids alike, one operation of 38 ran and the rest were silently
    dropped. Each such item gets the id its name implies."""
    seen = Counter(item.nodeid for item in items)
    for item in items:
        if seen[item.nodeid] > 1 and item.parent is not None and not item.nodeid.endswith(f"::{item.name}"):
            item._id = item.parent.id.child(item.name)  # pytest's own rule for a node's id
    alike = sorted(nodeid for nodeid, n in Counter(item.nodeid for item in items).items() if n > 1)
    if alike:  # never let a parallel run drop tests in silence
        raise pytest.UsageError(f"tests share a node id, so pytest-xdist would run one of each: {alike[:5]}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _unique_node_ids(items)
    by_module: dict[str, bool] = {}
    for item in items:
        module = getattr(item, "module", None)
        if module is None:
            continue
        if module.__name__ not in by_module:
            by_module[module.__name__] = _starts_processes(module)
        if by_module[module.__name__] or STACK_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.stack)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    # With users (switchyard/busauth.py); `server.url` carries the unrestricted admin's.
    server = NatsServer(store_dir=tmp_path / "nats", passwords=new_passwords(), client_role=ADMIN).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """The whole gateway, one process per service, shared by a test module."""
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-stack-"))
    stack = Stack.create(workdir, SWITCHYARD_DEMO_LATENCY_MS="5", SWITCHYARD_DEMO_CHUNK_DELAY_MS="1")
    with running(stack):
        stack.start_all()
        yield stack


@pytest.fixture(scope="session")
def chdb_path() -> Iterator[Path]:
    """One embedded chDB folder for the whole test process (chDB allows one engine per
    process): tests keep apart by each using its own database in it."""
    folder = Path(tempfile.mkdtemp(prefix="switchyard-chdb-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
