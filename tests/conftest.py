"""Fixtures, and the `stack` marker: `pytest -m "not stack"` runs the pure tests alone."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
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
