"""An idle gateway does not poll (docs/performance.md, "Idle cost"): the ingress's ledger-lag
reading rests while no request consults it and wakes when one does, and uvicorn's loop ticks
once a second yet stops at once when asked."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
import uvicorn

from services.ingress.edge import Overload, poll_ledger_lag
from switchyard import quiet_server
from switchyard.quiet_server import QuietServer


class ConsumerInfo:
    """The one JetStream call the poller makes, answering a set backlog and counting calls."""

    def __init__(self, backlog: int) -> None:
        self.backlog = backlog
        self.calls = 0

    async def consumer_info(self, stream: str, durable: str) -> SimpleNamespace:
        self.calls += 1
        return SimpleNamespace(num_pending=self.backlog, num_ack_pending=0)


async def wait_for_calls(js: ConsumerInfo, count: int) -> None:
    for _ in range(1000):
        if js.calls >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{js.calls} polls, expected {count}")


async def test_the_lag_poll_rests_while_idle_and_wakes_when_a_request_looks() -> None:
    js, overload = ConsumerInfo(backlog=0), Overload()
    poller = asyncio.create_task(
        poll_ledger_lag(js, overload, "EVENTS", "ledger", interval_s=0.01, quiet_interval_s=3600)
    )
    try:
        await wait_for_calls(js, 1)
        await asyncio.sleep(0.3)  # thirty intervals, and nobody consulted the lag
        assert js.calls == 1
        assert overload.ledger_lag == 0  # a request looks: the next reading comes at once
        await wait_for_calls(js, 2)
    finally:
        poller.cancel()


async def test_the_lag_poll_keeps_reading_while_there_is_a_backlog() -> None:
    js, overload = ConsumerInfo(backlog=7), Overload()
    poller = asyncio.create_task(
        poll_ledger_lag(js, overload, "EVENTS", "ledger", interval_s=0.01, quiet_interval_s=3600)
    )
    try:
        await wait_for_calls(js, 5)  # nobody consults it, but the backlog must be watched
        assert overload.polled_lag == 7
    finally:
        poller.cancel()


async def test_a_quiet_uvicorn_stops_at_once_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quiet_server, "TICK_S", 3600.0)  # only a wake-up can end the loop
    server = QuietServer(uvicorn.Config(app=lambda scope, receive, send: None))
    server.config.load()
    loop_task = asyncio.create_task(server.main_loop())
    await asyncio.sleep(0.05)
    assert not loop_task.done()
    server.request_exit()
    await asyncio.wait_for(loop_task, 30)
    assert server.should_exit
