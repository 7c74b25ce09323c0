"""`switchyard up`'s first-start set-up on the bus fails with where it waited, never hangs.

A server that accepts the connection and never speaks NATS stands for a bus that stopped
answering: nats-py would wait for it forever (it reconnects without end)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from switchyard import busauth
from switchyard.supervisor import bootstrap_within


async def test_a_bus_that_never_answers_is_a_timeout_naming_where_it_waited(tmp_path: Path) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # never answers, never closes

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    admin = busauth.BusCredentials(busauth.ADMIN, "not-a-real-password")
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError) as raised:
            await bootstrap_within(1.0, f"nats://127.0.0.1:{port}", admin, tmp_path, 1)
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
    assert time.monotonic() - started < 10
    message = str(raised.value)
    assert f"setting up the bus at nats://127.0.0.1:{port} took longer than 1 s" in message
    assert "in _bootstrap" in message and "in connect" in message  # the chain of awaits it was stuck in
    assert "not-a-real-password" not in message
    assert accepted, "it did reach the server"
