from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from switchyard.busauth import ADMIN, new_passwords
from switchyard.natsserver import NatsServer
from tests.support.procs import Stack, running


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
