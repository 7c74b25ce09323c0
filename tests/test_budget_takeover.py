"""A budget takeover that does not need the ledger (docs/budgets.md, "Restart and takeover"):
the leader writes its state to a snapshot on the bus; with the ledger killed, the leader killed
too, the standby takes over from the snapshot, the completion events after it and the
reservation journal, and keeps enforcing a total cap exactly."""

from __future__ import annotations

import signal
import tempfile
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import nats
import orjson
import pytest

from switchyard import subjects
from switchyard.testing.stack import Stack, running, wait_until
from tests.support.budgets import burst, scope_spent, set_budget, settled_cost, spend


@pytest.fixture(scope="module")
def pair() -> Iterator[Stack]:
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-takeover-"))
    stack = Stack.create(
        workdir,
        SWITCHYARD_DEMO_LATENCY_MS="2",
        SWITCHYARD_BUDGET_LEASE_TTL_S="1.5",
        SWITCHYARD_BUDGET_TIMEOUT_S="15",  # counts, not speed, on a loaded machine
    )
    with running(stack):
        stack.start(
            ("ledger", "services.ledger"),
            ("budget", "services.budget"),
            ("budget", "services.budget"),
            ("worker-demo", "services.providers", "--provider", "demo"),
            ("router", "services.router"),
            ("ingress", "services.ingress"),
        )
        stack.provision()
        yield stack


async def snapshot_covers_the_stream(nats_url: str) -> bool:
    """The latest budget snapshot has settled every completion event in the stream (the stream
    holds budget alerts too: compare with the last completion's sequence)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        kv = await js.key_value(subjects.BUDGET_SNAPSHOT_BUCKET)
        snapshot = orjson.loads((await kv.get("authority")).value or b"{}")
        last = (await js.get_last_msg(subjects.EVENTS_STREAM, subjects.COMPLETION)).seq or 0
        return int(snapshot.get("events_seq", 0)) >= last
    except nats.js.errors.KeyNotFoundError:
        return False
    finally:
        await nc.close()


async def test_a_leader_killed_while_the_ledger_is_down_is_replaced_and_keeps_the_cap(pair: Stack) -> None:
    key = pair.provision("snap")
    cost = await settled_cost(pair, key, "snap")
    set_budget(pair, "project", "snap", "total", cost * 10)
    assert [r.status_code for r in await burst(pair.ingress_url, key, 5)] == [200] * 5
    wait_until(
        lambda: scope_spent(spend(pair, "snap"), "project:snap", "total") == cost * 6, 20, what="settlement"
    )
    deadline = time.monotonic() + 20
    while not await snapshot_covers_the_stream(pair.nats.url):
        assert time.monotonic() < deadline, "no budget snapshot covers the settled events"
        time.sleep(0.2)

    pair.by_name("ledger")[0].stop(signal.SIGKILL)
    old = wait_until(pair.budget_leader, 20, what="the budget leader")
    old.stop(signal.SIGKILL)
    killed = time.monotonic()
    wait_until(
        lambda: (new := pair.budget_leader()) is not None and new is not old,
        timeout_s=20,
        what="a new budget leader while the ledger is down",
    )
    print(f"budget leader replaced {time.monotonic() - killed:.1f} s after the kill, ledger down")

    # 6 of 10 spent: exactly 4 more fit, the rest are refused.
    codes = [r.status_code for r in await burst(pair.ingress_url, key, 10)]
    assert codes.count(200) == 4 and codes.count(402) == 6, codes
    wait_until(
        lambda: scope_spent(spend(pair, "snap"), "project:snap", "total") == cost * 10,
        20,
        what="settlement by the new leader",
    )
    assert scope_spent(spend(pair, "snap"), "project:snap", "total") == Decimal(cost * 10)
