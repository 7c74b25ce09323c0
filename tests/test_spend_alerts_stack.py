"""Alerts that predict and tell the truth, through real processes (docs/budgets.md, "Burn-rate
alerts"): under a steady load a burn-rate alert fires before the cap refuses, with a projected
time close to when refusals begin; the `refusing` alert fires once per period with how many were
refused; the ledger stores every alert and the dashboard shows them. The windows are seconds
here (settings), hours in production."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from switchyard.testing.stack import Stack, running, wait_until
from tests.support.budgets import WebhookReceiver, alert_events, invoke, set_budget, settled_cost

RATE_PER_S = 10  # the steady load
SECONDS_TO_CAP = 12  # the cap is sized for this many seconds of it


@pytest.fixture(scope="module")
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(fail_first=0)
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def astack(webhook: WebhookReceiver) -> Iterator[Stack]:
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-spend-alerts-"))
    stack = Stack.create(
        workdir,
        SWITCHYARD_DEMO_LATENCY_MS="2",
        SWITCHYARD_BUDGET_WEBHOOK_URL=webhook.url,
        SWITCHYARD_BUDGET_TIMEOUT_S="15",
        # A 2 s window that projects, a 5 s one that must agree, alerting 4 s ahead at most.
        SWITCHYARD_BUDGET_BURN_SHORT_WINDOW_S="2",
        SWITCHYARD_BUDGET_BURN_LONG_WINDOW_S="5",
        SWITCHYARD_BUDGET_BURN_HORIZON_S="4",
        SWITCHYARD_BUDGET_BURN_SAMPLE_S="0.1",
    )
    with running(stack):
        stack.start_all()
        yield stack


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def steady_load(stack: Stack, key: str, seconds_after_refusal: float, max_s: float) -> dict:
    """Requests at RATE_PER_S, open loop (each sent on its tick, whatever the others do), until
    `seconds_after_refusal` after the first 402 or `max_s`. Returns when the load began, when the
    first 402 came back, and the statuses."""
    out: dict = {"statuses": [], "first_refusal_ms": None, "other": []}
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=stack.ingress_url, timeout=30, limits=limits) as http:

        async def one() -> None:
            r = await invoke(http, key)
            out["statuses"].append(r.status_code)
            if r.status_code not in (200, 402):
                out["other"].append((r.status_code, r.text[:300]))
            if r.status_code == 402 and out["first_refusal_ms"] is None:
                out["first_refusal_ms"] = now_ms()

        tasks = []
        out["start_ms"] = start = now_ms()
        for i in range(int(max_s * RATE_PER_S)):
            first = out["first_refusal_ms"]
            if first is not None and now_ms() - first > seconds_after_refusal * 1000:
                break
            await asyncio.sleep(max(start + i * 1000 / RATE_PER_S - now_ms(), 0) / 1000)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return out


@pytest.mark.timeout(300)  # a whole stack starts, then ~15 s of steady load, on a machine others may load
async def test_a_burn_rate_alert_predicts_the_refusals_and_the_refusing_alert_fires_once(
    astack: Stack, webhook: WebhookReceiver
) -> None:
    key = astack.provision("burning")
    cost = await settled_cost(astack, key, "burning")
    cap = cost * (1 + RATE_PER_S * SECONDS_TO_CAP)
    set_budget(astack, "project", "burning", "month", cap)

    load = await steady_load(astack, key, seconds_after_refusal=2.0, max_s=SECONDS_TO_CAP * 2.5)
    refused_at = load["first_refusal_ms"]
    assert refused_at is not None, (
        f"the cap never refused: {load['statuses'].count(200)} ok, {load['other'][:3]}"
    )
    refused = load["statuses"].count(402)
    assert refused >= 2
    # A loaded machine may shed a request (503, retryable: nothing billed, nothing held); any
    # other answer is a failure.
    assert all(status == 503 for status, _ in load["other"]), load["other"]
    assert len(load["other"]) <= len(load["statuses"]) // 10, load[
        "other"
    ]  # a few, not a steady load's worth

    async def mine(kind: str) -> list:
        return [a for a in await alert_events(astack.nats.url) if a.scope_id == "burning" and a.kind == kind]

    burn, refusing = await mine("burn_rate"), await mine("refusing")
    for _ in range(200):  # bounded: 20 s
        if burn and refusing:
            break
        await asyncio.sleep(0.1)
        burn, refusing = await mine("burn_rate"), await mine("refusing")
    assert burn and refusing, (burn, refusing)
    await asyncio.sleep(0.5)  # time for a (wrong) repeat to show up
    assert len(await mine("burn_rate")) == 1 and len(await mine("refusing")) == 1

    # The burn-rate alert came before the first refusal and said when it would come: within
    # 10 % of the time the load took to reach it.
    alert = burn[0]
    assert alert.ts_unix_ms < refused_at
    error_ms = abs(alert.projected_unix_ms - refused_at)
    assert error_ms <= 0.1 * (refused_at - load["start_ms"]), (alert, refused_at, load["start_ms"])
    assert alert.window_ms == 2000 and alert.long_window_ms == 5000 and alert.period == "month"
    assert Decimal(alert.rate_usd_per_hour) > 0 and alert.cap_usd.rstrip("0").rstrip(".") in str(cap)
    assert alert.message.startswith("project:burning: at the last 2 s's rate")

    # The refusing alert: once for the period, however many were refused after it.
    stop = refusing[0]
    assert stop.refused_count >= 1 and stop.message.startswith("cap reached: requests are being refused")
    assert Decimal(stop.spent_usd) + Decimal(stop.reserved_usd) + Decimal(stop.refused_usd) > Decimal(
        stop.cap_usd
    )

    def posted(kind: str) -> list[dict]:
        return [b for b, _ in webhook.received if b["scope"] == "project:burning" and b["kind"] == kind]

    wait_until(lambda: posted("burn_rate") and posted("refusing"), timeout_s=20, what="the webhook posts")
    assert posted("burn_rate")[0]["projected_unix_ms"] == alert.projected_unix_ms
    assert len(posted("refusing")) == 1

    # The ledger keeps both, and the dashboard shows them with the refusals counted so far.
    def shown() -> dict[str, dict]:
        r = httpx.get(
            f"{astack.dashboard_url}/api/alerts", params={"window": "24h"}, headers=astack.dashboard_headers
        )
        assert r.status_code == 200, r.text
        return {a["kind"]: a for a in r.json()["alerts"] if a["scope"] == "project:burning"}

    rows = wait_until(
        lambda: (
            (s := shown())
            and "burn_rate" in s
            and s.get("refusing", {}).get("refused_count", 0) >= refused
            and s
        ),
        timeout_s=30,
        what="the alerts on the dashboard with every refusal counted",
    )
    assert rows["burn_rate"]["projected_at"] == alert.projected_unix_ms
    assert rows["refusing"]["refused_count"] == refused  # every 402 of the load, from the ledger
    assert {"threshold"} <= set(rows)  # 50, 80 or 100 % too
