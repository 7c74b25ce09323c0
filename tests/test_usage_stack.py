"""`GET /v1/usage` through real processes (docs/budgets.md, "Self-service usage"): a project's
own key reads its spend, caps, headroom, burn rate, projected exhaustion and its roll-up per
agent and run; another project's data is refused; the CLI and the dashboard show the same."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import pytest

from switchyard.cli import main as cli
from switchyard.testing.stack import Stack, running, wait_until
from tests.support.budgets import BODY, bearer, set_budget, settled_cost


@pytest.fixture(scope="module")
def ustack() -> Iterator[Stack]:
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-usage-"))
    stack = Stack.create(workdir, SWITCHYARD_DEMO_LATENCY_MS="2", SWITCHYARD_BUDGET_TIMEOUT_S="15")
    with running(stack):
        stack.start_all()
        yield stack


def send(stack: Stack, key: str, metadata: dict[str, str] | None = None) -> Decimal:
    r = httpx.post(
        f"{stack.ingress_url}/llm.invoke",
        json={**BODY, "metadata": metadata or {}},
        headers=bearer(key),
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return Decimal(r.json()["cost_usd"])


def usage(stack: Stack, key: str, **params: str) -> httpx.Response:
    return httpx.get(f"{stack.ingress_url}/v1/usage", params=params, headers=bearer(key), timeout=30)


@pytest.mark.timeout(300)  # a whole stack starts on a machine others may load
async def test_a_projects_key_reads_its_usage_and_nothing_else(
    ustack: Stack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert ustack.admin("POST", "/projects", json={"id": "team"}).status_code == 201
    assert ustack.admin("POST", "/projects/team/agents", json={"id": "bot"}).status_code == 201
    bot_key = ustack.provision("team", agent="bot")
    plain_key = ustack.provision("team")
    other_key = ustack.provision("other")
    cost = await settled_cost(ustack, plain_key, "team")  # one plain request, no agent
    for _ in range(3):
        send(ustack, bot_key, {"run_id": "run-1"})
    for _ in range(2):
        send(ustack, plain_key, {"agent": "planner", "run_id": "run-2"})
    send(ustack, other_key, {"agent": "spy"})
    spent = cost * 6
    cap = cost * 8  # 2 requests of headroom: at this hour's rate, reached well before midnight
    set_budget(ustack, "project", "team", "day", cap)

    def settled() -> dict:
        r = usage(ustack, plain_key)
        assert r.status_code == 200, r.text
        report = r.json()
        scopes = {s["scope"]: s for s in report["scopes"]}
        assert Decimal(scopes["project:team"]["periods"]["day"]["spent_usd"]) == spent
        # The ledger has every row (its two reads are not one snapshot: both must show them).
        assert sum(a["requests"] for a in report["agents"]) == 5
        assert Decimal(scopes["project:team"]["burn"]["long"]["usd_per_hour"]) > 0
        # The scope's own rate is read over its whole hour, never cut at midnight (period
        # "total"; the day budget's, below, is): all of it was spent within that hour. (This
        # once multiplied by the day's age too, and failed from 00:00 to 01:00 UTC.)
        assert Decimal(scopes["project:team"]["burn"]["short"]["usd_per_hour"]) >= spent * Decimal("0.99")
        return report

    report = wait_until(settled, timeout_s=30, what="the usage to count every request")
    scopes = {s["scope"]: s for s in report["scopes"]}
    assert report["project"] == "team"
    assert Decimal(scopes["agent:team/bot"]["periods"]["day"]["spent_usd"]) == cost * 3
    (day,) = scopes["project:team"]["budgets"]
    assert Decimal(day["cap_usd"]) == cap and Decimal(day["headroom_usd"]) == cap - spent
    # The last hour's rate: everything was spent within it (or within the day, if younger).
    span_h = min(Decimal(3600), Decimal(report["now_unix_ms"] % 86_400_000) / 1000) / 3600
    rate = Decimal(day["burn"]["short"]["usd_per_hour"])
    assert abs(rate - spent / span_h) <= spent / span_h / 100
    runs_out = report["now_unix_ms"] + float((cap - spent) / rate) * 3_600_000
    assert abs(day["projected_exhaustion_unix_ms"] - runs_out) < 1000
    assert day["before_period_end"] == (day["projected_exhaustion_unix_ms"] < day["period_end_unix_ms"])

    agents = {a["agent"]: a for a in report["agents"]}
    assert set(agents) == {"bot", "planner"}  # not the other project's "spy"
    assert (agents["bot"]["requests"], agents["bot"]["runs"]) == (3, 1)
    assert Decimal(agents["planner"]["cost_usd"]) == cost * 2
    runs = {r["run_id"]: (r["agent"], r["requests"]) for r in report["runs"]}
    assert runs == {"run-1": ("bot", 3), "run-2": ("planner", 2)}

    # Another project's data is refused; its own key sees only its own.
    denied = usage(ustack, plain_key, project="other")
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "permission_denied"
    theirs = usage(ustack, other_key).json()
    assert theirs["project"] == "other" and [a["agent"] for a in theirs["agents"]] == ["spy"]
    assert all(s["scope"] in ("project:other", f"key:{s['scope'][4:]}") for s in theirs["scopes"])
    assert not any("team" in s["scope"] for s in theirs["scopes"])
    assert httpx.get(f"{ustack.ingress_url}/v1/usage", timeout=30).status_code == 401
    assert usage(ustack, plain_key, period="week").status_code == 400

    # The CLI (admin API) and the dashboard show the same report.
    token_file = tmp_path / "admin-token"
    token_file.write_text(ustack.admin_token + "\n")
    monkeypatch.setenv("SWITCHYARD_ADMIN_TOKEN_FILE", str(token_file))
    capsys.readouterr()
    assert cli(["usage", "--project", "team", "--json", "--url", ustack.ingress_url]) == 0
    from_cli = orjson.loads(capsys.readouterr().out)
    assert from_cli["agents"] == report["agents"] and from_cli["runs"] == report["runs"]
    assert {s["scope"] for s in from_cli["scopes"]} == set(scopes)
    assert cli(["usage", "--project", "team", "--url", ustack.ingress_url]) == 0
    table = capsys.readouterr().out
    assert "project:team" in table and "bot" in table and "run-2" in table
    r = httpx.get(
        f"{ustack.dashboard_url}/api/usage", params={"project": "team"}, headers=ustack.dashboard_headers
    )
    assert r.status_code == 200, r.text
    shown = r.json()
    assert shown["agents"] == report["agents"] and shown["runs"] == report["runs"]
    shown_day = {s["scope"]: s for s in shown["scopes"]}["project:team"]["budgets"][0]
    assert (shown_day["cap_usd"], shown_day["headroom_usd"]) == (day["cap_usd"], day["headroom_usd"])
