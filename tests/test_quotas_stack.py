"""Provider quotas through real processes: real NATS, two routers, the budget authority, an
OpenAI worker and a fake OpenAI upstream that enforces its own per-key rate limit (real 429s).

The assertions are counts taken from the fake's own records: how many requests each key got,
and that it never had to answer 429. No timed assertions; waits are bounded polls.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest

from switchyard import subjects
from switchyard.testing.stack import Stack, running, wait_for_rows
from switchyard.v1 import budget_pb2
from tests.fakes import OpenAIFake
from tests.test_observability import ARTIFACTS, BROWSER_ARGS, CHROMIUM

N = 5  # requests per minute per key, on both sides
KEYS = ("sk-quota-1", "sk-quota-2", "sk-free-3", "sk-free-4", "sk-headers-5")

CONFIG = """
[demo]
enabled = false

[[deployments]]
id = "key1/gpt"
provider = "openai"
model = "gpt-4o-mini"
base_url = "{base_url}"
api_key = "sk-quota-1"
limits = {{ rpm = {n} }}

[[deployments]]
id = "key2/gpt"
provider = "openai"
model = "gpt-4o-mini"
base_url = "{base_url}"
api_key = "sk-quota-2"
limits = {{ rpm = {n} }}

[[deployments]]
id = "key3/gpt"
provider = "openai"
model = "gpt-4o-mini"
base_url = "{base_url}"
api_key = "sk-free-3"

[[deployments]]
id = "key4/gpt"
provider = "openai"
model = "gpt-4o-mini"
base_url = "{base_url}"
api_key = "sk-free-4"

[[deployments]]
id = "key5/gpt"
provider = "openai"
model = "gpt-4o-mini"
base_url = "{base_url}"
api_key = "sk-headers-5"
limits = {{ rpm = 100 }}  # more than the key really has: the provider's headers correct it

[routes.limited]
deployments = ["key1/gpt", "key2/gpt"]

[routes.unlimited]
deployments = ["key3/gpt", "key4/gpt"]

[routes.headers]
deployments = ["key5/gpt"]
"""


@pytest.fixture(scope="module")
def fake() -> Iterator[OpenAIFake]:
    upstream = OpenAIFake(api_key=KEYS[0], more_keys=KEYS[1:]).start()
    upstream.limit_key("sk-quota-1", N)
    upstream.limit_key("sk-quota-2", N)
    upstream.limit_key("sk-headers-5", 3)
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def qstack(fake: OpenAIFake) -> Iterator[Stack]:
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-quotas-"))
    config = workdir / "switchyard.toml"
    config.write_text(CONFIG.format(base_url=fake.base_url, n=N))
    stack = Stack.create(
        workdir,
        SWITCHYARD_CONFIG_FILE=str(config),
        SWITCHYARD_BUDGET_TIMEOUT_S="15",  # counts, not speed, on a loaded 2-core machine
        SWITCHYARD_LEDGER_QUOTA_SAMPLE_S="1",
    )
    with running(stack):
        stack.start(
            ("ledger", "services.ledger"),
            ("budget", "services.budget"),
            ("worker-openai", "services.providers", "--provider", "openai"),
            ("router-1", "services.router"),
            ("router-2", "services.router"),
            ("ingress", "services.ingress"),
        )
        stack.provision()
        yield stack


def body(route: str) -> dict:
    return {"model": route, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


async def burst(stack: Stack, route: str, count: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(
        base_url=stack.ingress_url, headers=stack.headers, timeout=60, limits=limits
    ) as http:
        return await asyncio.gather(*[http.post("/llm.invoke", json=body(route)) for _ in range(count)])


def served(fake: OpenAIFake) -> Counter[str]:
    """Requests the fake answered with a completion, per key."""
    return Counter(
        r.headers.get("authorization", "").removeprefix("Bearer ") for r in fake.requests if r.outcome == "ok"
    )


async def quota_state(nats_url: str, predicate, timeout_s: float = 20.0) -> budget_pb2.QuotaState:
    """The first published quota state that satisfies `predicate`."""
    nc = await nats.connect(nats_url)
    try:
        sub = await nc.subscribe(subjects.QUOTA_STATE)
        deadline = time.monotonic() + timeout_s
        while True:
            msg = await sub.next_msg(timeout=max(deadline - time.monotonic(), 0.1))
            state = budget_pb2.QuotaState.FromString(msg.data)
            if predicate(state):
                return state
            if time.monotonic() > deadline:
                raise TimeoutError(f"no quota state matched; last: {state}")
    finally:
        await nc.close()


def test_the_fake_enforces_its_own_limit(fake: OpenAIFake) -> None:
    """The guard the next tests rely on: past its limit the fake answers a real 429."""
    fake.limit_key("sk-free-4", 2)
    try:
        url = f"{fake.base_url}/chat/completions"
        auth = {"authorization": "Bearer sk-free-4"}
        statuses = [
            httpx.post(url, json={**body("gpt-4o-mini"), "model": "gpt-4o-mini"}, headers=auth).status_code
            for _ in range(3)
        ]
        assert statuses == [200, 200, 429]
        assert fake.rate_limited == 1
    finally:
        fake.limit_key("sk-free-4", None)
        fake.rate_limited = 0
        fake.requests.clear()


async def test_a_burst_spreads_over_both_keys_and_the_rest_is_refused_before_any_upstream_429(
    qstack: Stack, fake: OpenAIFake
) -> None:
    first = await burst(qstack, "limited", 1)
    # The rest ranked with the quota state that counts the first: the authority publishes it
    # every 0.5 s, and a burst routed within one such interval would see none (a CI run on a
    # loaded machine). The routers read it before the next invoke: one connection, in order.
    await quota_state(qstack.nats.url, lambda s: sum(d.granted for d in s.deployments) >= 1)
    responses = first + await burst(qstack, "limited", 3 * N - 1)
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert len(ok) == 2 * N, [r.text for r in refused]
    assert len(refused) == N
    for r in refused:
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "rate_limited"
        assert "provider quota" in r.json()["error"]["message"]
        # The soonest free slot: one request per 60/N seconds refills.
        assert 1 <= int(r.headers["retry-after"]) <= 60 // N + 1
    assert fake.rate_limited == 0  # the upstream never had to refuse anything
    counts = served(fake)
    assert counts["sk-quota-1"] == N and counts["sk-quota-2"] == N
    assert {r.json()["rationale"]["winner"] for r in ok} == {"key1/gpt", "key2/gpt"}
    # Later answers show the quota in the rationale: used headroom, or a key excluded at quota.
    quota_seen = [
        c
        for r in ok
        for c in r.json()["rationale"]["candidates"]
        if c.get("quota") or c.get("excluded") == "quota"
    ]
    assert quota_seen

    state = await quota_state(qstack.nats.url, lambda s: sum(d.refused for d in s.deployments) >= N)
    by_id = {d.deployment_id: d for d in state.deployments}
    assert by_id["key1/gpt"].granted == N and by_id["key2/gpt"].granted == N
    assert by_id["key1/gpt"].rpm_limit == N and by_id["key1/gpt"].requests_available < 1
    assert "key3/gpt" not in by_id  # no limits, not tracked


async def test_without_limits_every_request_passes(qstack: Stack, fake: OpenAIFake) -> None:
    responses = await burst(qstack, "unlimited", 3 * N)
    assert [r.status_code for r in responses] == [200] * (3 * N), [r.text for r in responses]
    assert fake.rate_limited == 0
    counts = served(fake)
    assert counts["sk-free-3"] + counts["sk-free-4"] == 3 * N


async def test_the_providers_rate_limit_headers_lower_the_quota(qstack: Stack, fake: OpenAIFake) -> None:
    """key5 is configured at 100 rpm but the key really has 3: after the provider's
    x-ratelimit-remaining-requests reaches 0 the gateway refuses by itself."""
    async with httpx.AsyncClient(base_url=qstack.ingress_url, headers=qstack.headers, timeout=60) as http:
        for _ in range(3):
            r = await http.post("/llm.invoke", json=body("headers"))
            assert r.status_code == 200, r.text
        state = await quota_state(
            qstack.nats.url,
            lambda s: any(d.deployment_id == "key5/gpt" and d.requests_available < 1 for d in s.deployments),
        )
        # The key's real limit (3) replaced the declared 100.
        assert next(d for d in state.deployments if d.deployment_id == "key5/gpt").rpm_limit == 3
        refused = await http.post("/llm.invoke", json=body("headers"))
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert "provider quota" in refused.json()["error"]["message"]
    assert fake.rate_limited == 0
    assert served(fake)["sk-headers-5"] == 3


# The analyst query of docs/quotas.md: quota use per deployment per minute.
QUOTA_SQL = """
SELECT deployment_id,
       toStartOfMinute(ts) AS minute,
       max(rpm_limit) AS rpm_limit,
       min(headroom) AS min_headroom,
       max(granted) AS granted,
       max(refused) AS refused
FROM quota_usage FINAL
WHERE ts >= now() - INTERVAL 1 HOUR
GROUP BY deployment_id, minute
ORDER BY minute, deployment_id
"""


async def test_the_ledger_records_quota_use_per_deployment(qstack: Stack) -> None:
    """Runs after the burst: its grants and refusals are in the sampled quota state."""

    async def rows_after_burst() -> list[dict]:
        rows = await wait_for_rows(qstack.nats.url, QUOTA_SQL, 2, timeout_s=20)
        return [r for r in rows if r["deployment_id"] in ("key1/gpt", "key2/gpt") and r["granted"] >= N]

    deadline = time.monotonic() + 20
    rows = await rows_after_burst()
    while len({r["deployment_id"] for r in rows}) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        rows = await rows_after_burst()
    assert {r["deployment_id"] for r in rows} == {"key1/gpt", "key2/gpt"}
    assert all(r["rpm_limit"] == N for r in rows)
    assert sum(r["refused"] for r in rows) >= N
    assert min(r["min_headroom"] for r in rows) < 0.2
    # The refusals are in the requests table too, as rejected with code rate_limited.
    refused = await wait_for_rows(
        qstack.nats.url,
        "SELECT request_id FROM requests FINAL WHERE status = 'rejected' AND error_code = 'rate_limited' "
        "AND position(error_message, 'provider quota') > 0",
        N,
    )
    assert len(refused) >= N


async def test_the_dashboard_shows_quota_use_per_deployment(qstack: Stack) -> None:
    async with httpx.AsyncClient(
        base_url=qstack.dashboard_url, headers=qstack.dashboard_headers, timeout=30
    ) as http:
        assert (await http.get("/api/quotas?window=forever")).status_code == 400
        deadline = time.monotonic() + 20
        while True:
            found = {d["deployment"]: d for d in (await http.get("/api/quotas")).json()["deployments"]}
            if {"key1/gpt", "key2/gpt"} <= set(found) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    key1 = found["key1/gpt"]
    assert key1["limits"][0]["limit"] == "requests / min" and key1["limits"][0]["of"] == N
    assert key1["granted"] == N and key1["min_headroom"] < 0.2
    assert sum(found[k]["refused"] for k in ("key1/gpt", "key2/gpt")) >= N


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (make install-browser)")
async def test_the_quota_panel_in_a_headless_browser(qstack: Stack) -> None:
    from playwright.async_api import async_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS, headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1440, "height": 1400})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(qstack.dashboard_login_url)
            await page.wait_for_selector("body[data-loaded=true]", timeout=15_000)
            row = page.locator("#quota-table tr[data-deployment='key1/gpt']").first
            await row.wait_for(timeout=15_000)
            assert f"{N} requests / min" in await row.inner_text()
            assert await page.locator("#quota-table tr[data-deployment='key2/gpt']").count() >= 1
            await page.locator("#quotas").screenshot(path=str(ARTIFACTS / "dashboard-quotas.png"))
            assert not errors, errors
        finally:
            await browser.close()
