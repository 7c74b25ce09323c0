"""Keys, the admin API, caps, rate limits, alerts and the webhook through real processes."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from switchyard.cli import main as cli
from switchyard.pricing import format_usd
from switchyard.testing.stack import ROUTER_MODES, Stack, running, wait_for_rows, wait_until
from tests.support.budgets import (
    BODY,
    WebhookReceiver,
    alert_events,
    bearer,
    burst,
    invoke,
    metric,
    scope_spent,
    set_budget,
    settled_cost,
    spend,
)


@pytest.fixture(scope="module")
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(fail_first=1)
    yield receiver
    receiver.close()


# Router processes by default; the rate-limit test also runs with the ingress running the router
# itself (parametrized with ROUTER_MODES, indirect): one stack per mode for the module.
@pytest.fixture(scope="module", params=["service"])
def bstack(webhook: WebhookReceiver, request: pytest.FixtureRequest) -> Iterator[Stack]:
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-budgets-"))
    stack = Stack.create(
        workdir,
        SWITCHYARD_ROUTER_MODE=request.param,
        SWITCHYARD_DEMO_LATENCY_MS="2",
        SWITCHYARD_BUDGET_WEBHOOK_URL=webhook.url,
        # The router's wait for the authority is 0.5 s by default; on a loaded 2-core machine a
        # burst can exceed it (a 503, fail closed). These tests are about counts, not speed.
        SWITCHYARD_BUDGET_TIMEOUT_S="15",
    )
    with running(stack):
        stack.start_all()
        yield stack


async def test_keys_authenticate_and_identify_the_caller(bstack: Stack) -> None:
    assert bstack.admin("POST", "/projects", json={"id": "acme"}).status_code == 201
    assert bstack.admin("POST", "/projects/acme/agents", json={"id": "bot"}).status_code == 201
    created = bstack.admin("POST", "/keys", json={"project": "acme", "agent": "bot", "name": "ci"}).json()
    key, key_id = created["key"], created["id"]
    listed = bstack.admin("GET", "/keys", params={"project": "acme"}).json()["data"]
    assert [k["id"] for k in listed] == [key_id]
    assert "key" not in listed[0] and "key_hash" not in listed[0] and key not in str(listed)

    async with httpx.AsyncClient(base_url=bstack.ingress_url, timeout=30) as http:
        missing = await http.post("/llm.invoke", json=BODY)
        wrong = await http.post("/llm.invoke", json=BODY, headers=bearer(key[:-3] + "abc"))
        as_bearer = await invoke(http, key)
        as_x_api_key = await http.post("/llm.invoke", json=BODY, headers={"x-api-key": key})
    for r in (missing, wrong):
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "unauthorized"
    assert "missing API key" in missing.json()["error"]["message"]
    assert as_bearer.status_code == 200 and as_x_api_key.status_code == 200
    rows = await wait_for_rows(
        bstack.nats.url,
        "SELECT project_id, agent_id, key_id FROM requests FINAL WHERE request_id = {id:String}",
        1,
        {"id": as_bearer.json()["request_id"]},
    )
    assert rows[0] == {"project_id": "acme", "agent_id": "bot", "key_id": key_id}
    assert all(key not in log.read_text() for log in bstack.workdir.glob("*.log"))


async def test_revocation_reaches_every_ingress_live(bstack: Stack) -> None:
    first_url = bstack.ingress_url
    created = bstack.admin("POST", "/keys", json={"project": "acme"}).json()
    key, key_id = created["key"], created["id"]
    second = bstack.spawn("ingress-2", "services.ingress")  # learns keys from the KV watch only
    second_url, bstack.ingress_url = bstack.ingress_url, first_url
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            assert (
                await http.post(f"{second_url}/llm.invoke", json=BODY, headers=bearer(key))
            ).status_code == 200
            revoked = bstack.admin("DELETE", f"/keys/{key_id}").json()
            assert revoked["revoked"] is True

            async def refused() -> bool:
                r = await http.post(f"{second_url}/llm.invoke", json=BODY, headers=bearer(key))
                return r.status_code == 401 and "revoked" in r.json()["error"]["message"]

            for _ in range(100):
                if await refused():
                    break
            else:
                pytest.fail("the second ingress still accepts a revoked key")
            r = await http.post(f"{first_url}/llm.invoke", json=BODY, headers=bearer(key))
            assert r.status_code == 401
    finally:
        second.stop()


def test_admin_api_needs_the_admin_token_and_validates(bstack: Stack) -> None:
    url = f"{bstack.ingress_url}/admin/v1/projects"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers=bearer(bstack.api_key)).status_code == 401  # an API key is not admin
    assert (
        bstack.admin("POST", "/projects", json={"id": "bad id"}).json()["error"]["code"] == "invalid_request"
    )
    assert bstack.admin("POST", "/projects", json={"id": "default"}).status_code == 409
    assert bstack.admin("POST", "/keys", json={"project": "nope"}).status_code == 404
    r = bstack.admin(
        "PUT", "/budgets", json={"scope": "project", "scope_id": "default", "period": "week", "cap_usd": "1"}
    )
    assert r.status_code == 400 and "period" in r.json()["error"]["message"]
    r = bstack.admin("PATCH", "/projects/default", json={"limits": {"rps": 1000}})
    assert r.status_code == 200 and r.json()["limits"]["rps"] == 1000


async def test_a_cap_denies_with_402_and_alerts_once_per_threshold(
    bstack: Stack, webhook: WebhookReceiver
) -> None:
    key = bstack.provision("capped")
    cost = await settled_cost(bstack, key, "capped")
    set_budget(bstack, "project", "capped", "day", cost * 4, thresholds=[50, 100])

    async with httpx.AsyncClient(base_url=bstack.ingress_url, timeout=30) as http:
        statuses = [(await invoke(http, key)) for _ in range(5)]
    assert [r.status_code for r in statuses] == [200, 200, 200, 402, 402]
    error = statuses[-1].json()["error"]
    assert error["code"] == "budget_exceeded"
    assert (
        "project:capped" in error["message"] and f"day cap of {format_usd(cost * 4)} USD" in error["message"]
    )

    status = wait_until(
        lambda: (s := spend(bstack, "capped")) and scope_spent(s, "project:capped") == cost * 4 and s,
        timeout_s=20,
        what="settled spend",
    )
    budget = next(e for e in status["scopes"] if e["scope"] == "project:capped")["budgets"][0]
    assert budget["used_pct"] == 100.0 and Decimal(budget["remaining_usd"]) == 0

    for _ in range(100):
        events = [a for a in await alert_events(bstack.nats.url) if a.scope_id == "capped"]
        if len(events) >= 2:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # time for a (wrong) repeat to show up
    events = [
        a for a in await alert_events(bstack.nats.url) if a.scope_id == "capped" and a.kind == "threshold"
    ]
    assert sorted(a.threshold_pct for a in events) == [50, 100]
    assert {a.cap_usd for a in events} == {format_usd(cost * 4)}

    def posts() -> list[tuple[dict, dict]]:
        return [
            (b, h) for b, h in webhook.received if b["scope"] == "project:capped" and b["kind"] == "threshold"
        ]

    wait_until(lambda: len(posts()) == 2, timeout_s=20, what="2 posts")
    delivered = posts()
    assert sorted(b["threshold_pct"] for b, _ in delivered) == [50, 100]
    assert all(h.get("Idempotency-Key") == b["id"] for b, h in delivered)
    assert webhook.calls >= 3  # the first POST failed and was retried


async def test_a_cap_that_starts_refusing_alerts_once(bstack: Stack, webhook: WebhookReceiver) -> None:
    key = bstack.provision("refusing")
    cost = await settled_cost(bstack, key, "refusing")
    set_budget(bstack, "project", "refusing", "day", cost * 3)  # two more requests fit

    async def refusing_alerts() -> list:
        return [
            a
            for a in await alert_events(bstack.nats.url)
            if a.scope_id == "refusing" and a.kind == "refusing"
        ]

    async with httpx.AsyncClient(base_url=bstack.ingress_url, timeout=30) as http:
        assert [(await invoke(http, key)).status_code for _ in range(3)] == [200, 200, 402]
        for _ in range(100):
            if await refusing_alerts():
                break
            await asyncio.sleep(0.1)
        assert (await invoke(http, key)).status_code == 402  # refused again: no second alert
    await asyncio.sleep(0.5)  # time for a (wrong) repeat to show up
    alerts = await refusing_alerts()
    assert len(alerts) == 1
    alert = alerts[0]
    assert (alert.cap_usd, alert.refused_usd) == (format_usd(cost * 3), format_usd(cost))
    assert Decimal(alert.spent_usd) + Decimal(alert.reserved_usd) == cost * 3  # refused at the cap
    leader = bstack.budget_leader()
    assert leader is not None
    refusals = metric(leader.metrics_url, "switchyard_budget_refusals_total", scope="project:refusing")
    assert refusals == 2

    def posts() -> list[dict]:
        return [
            b for b, _ in webhook.received if b["scope"] == "project:refusing" and b["kind"] == "refusing"
        ]

    wait_until(lambda: len(posts()) == 1, timeout_s=20, what="the refusing alert's post")
    assert posts()[0]["message"].startswith("cap reached: requests are being refused: project:refusing")
    assert posts()[0]["refused_usd"] == format_usd(cost)


@pytest.mark.parametrize("bstack", ROUTER_MODES, indirect=True)
async def test_rate_limits_answer_429_with_retry_after(bstack: Stack) -> None:
    bstack.admin("POST", "/projects", json={"id": "limited"})
    key = bstack.admin("POST", "/keys", json={"project": "limited", "limits": {"rps": 1}}).json()["key"]
    responses = await burst(bstack.ingress_url, key, 6)
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) >= 1 and codes.count(429) >= 1 and set(codes) <= {200, 429}
    limited = next(r for r in responses if r.status_code == 429)
    assert limited.json()["error"]["code"] == "rate_limited"
    assert "requests per second" in limited.json()["error"]["message"]
    assert int(limited.headers["retry-after"]) >= 1


def test_cli_creates_keys_sets_budgets_and_shows_spend(
    bstack: Stack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The token comes from a file (a mounted secret), never from the command line (`ps`).
    token_file = tmp_path / "admin-token"
    token_file.write_text(bstack.admin_token + "\n")
    monkeypatch.setenv("SWITCHYARD_ADMIN_TOKEN_FILE", str(token_file))
    common = ["--url", bstack.ingress_url]
    with pytest.raises(SystemExit):
        cli(["projects", "list", "--admin-token", bstack.admin_token, *common])
    capsys.readouterr()
    assert cli(["projects", "create", "cli-team", "--rps", "50", *common]) == 0
    assert cli(["keys", "create", "--project", "cli-team", "--name", "laptop", *common]) == 0
    out = capsys.readouterr().out
    key = next(line.split()[-1] for line in out.splitlines() if line.startswith("api key:"))
    key_id = next(line.split()[-1] for line in out.splitlines() if line.startswith("key id:"))
    assert key.startswith("sy-")
    assert cli(["keys", "list", "--project", "cli-team", *common]) == 0
    listing = capsys.readouterr().out
    assert key_id in listing and "laptop" in listing and key not in listing
    assert (
        cli(["budgets", "set", "--project", "cli-team", "--period", "month", "--cap", "12.5", *common]) == 0
    )
    assert "month cap 12.5 USD" in capsys.readouterr().out
    wait_until(lambda: cli(["budgets", "show", "--project", "cli-team", *common]) == 0
             and "12.5" in capsys.readouterr().out, timeout_s=20, what="budgets show")  # fmt: skip
    assert cli(["keys", "revoke", key_id, *common]) == 0
    assert f"revoked {key_id}" in capsys.readouterr().out
    assert httpx.post(f"{bstack.ingress_url}/llm.invoke", json=BODY, headers=bearer(key)).status_code == 401
    assert cli(["keys", "revoke", "key_missing", *common]) == 1
    assert "not_found" in capsys.readouterr().err
