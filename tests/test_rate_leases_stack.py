"""Budget leases on a rate-limited key through real processes: two routers admitting from leases
of one authority, a key limited to 40 requests per second. Under its limit every request is
served, most from leases (no round trip to the authority); a burst of three times the limit,
half in OpenAI's dialect and half in Anthropic's, admits the limit (plus what refills while the
burst is decided, never more), refuses the rest with 429 + Retry-After in the caller's dialect,
and every request, served or refused, has its ledger row (docs/budgets.md, "Leases on
rate-limited scopes")."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from switchyard.testing.stack import Stack, running, wait_for_rows
from tests.support.budgets import invoke, metric

pytestmark = pytest.mark.timeout(240)

RPS = 40
BURST = 3 * RPS
# Long enough for every lease of what came before to end at its router (a second), come back
# or count as used at the authority (2.5 s after its grant), and for the bucket to refill (up to
# a quarter of it, lent and counted as used: 0.25 s at 40 a second), with a second of margin.
QUIET_S = 4.0
PROMPT = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def limited() -> Iterator[Stack]:
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-rate-leases-"))
    stack = Stack.create(
        workdir,
        SWITCHYARD_DEMO_LATENCY_MS="2",
        SWITCHYARD_BUDGET_TIMEOUT_S="15",  # counts, not speed, on a loaded machine
    )
    with running(stack):
        stack.start(("ledger", "services.ledger"))
        stack.start(
            ("budget", "services.budget"),
            ("worker-demo", "services.providers", "--provider", "demo"),
            ("router", "services.router"),
            ("router", "services.router"),
            ("ingress", "services.ingress"),
        )
        stack.provision()
        yield stack


def _admissions(stack: Stack, via: str) -> float:
    return sum(
        metric(router.metrics_url, "switchyard_router_budget_admissions_total", via=via)
        for router in stack.by_name("router")
    )


async def _openai(http: httpx.AsyncClient, key: str) -> httpx.Response:
    return await http.post(
        "/v1/chat/completions",
        json={"model": "demo/fast", "max_tokens": 8, "messages": PROMPT},
        headers={"authorization": f"Bearer {key}"},
    )


async def _anthropic(http: httpx.AsyncClient, key: str) -> httpx.Response:
    return await http.post(
        "/v1/messages",
        json={"model": "demo/fast", "max_tokens": 8, "messages": PROMPT},
        headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
    )


async def _burst(stack: Stack, key: str) -> tuple[list[httpx.Response], list[httpx.Response], float]:
    """BURST requests at once, alternating dialects: (OpenAI's, Anthropic's, seconds taken)."""
    limits = httpx.Limits(max_connections=BURST)
    async with httpx.AsyncClient(base_url=stack.ingress_url, timeout=60, limits=limits) as http:
        started = time.monotonic()
        answers = await asyncio.gather(*[(_openai if i % 2 else _anthropic)(http, key) for i in range(BURST)])
        elapsed = time.monotonic() - started
    return list(answers[1::2]), list(answers[0::2]), elapsed


def _check_refusals(openai: list[httpx.Response], anthropic: list[httpx.Response]) -> None:
    for r in openai + anthropic:
        assert r.status_code in (200, 429), r.text
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1
    for r in openai:
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "rate_limit_exceeded", r.text
            assert "requests per second" in r.json()["error"]["message"]
    for r in anthropic:
        if r.status_code == 429:
            body = r.json()
            assert (body["type"], body["error"]["type"]) == ("error", "rate_limit_error"), r.text


async def test_two_routers_leasing_a_rate_limited_key_admit_its_limit_and_record_every_request(
    limited: Stack,
) -> None:
    limited.admin("POST", "/projects", json={"id": "rated"})
    created = limited.admin("POST", "/keys", json={"project": "rated", "limits": {"rps": RPS}})
    assert created.status_code in (200, 201), created.text
    key = created.json()["key"]

    # Under the limit (at most 20 a second): every request served, most from leases.
    before = _admissions(limited, "lease")
    async with httpx.AsyncClient(base_url=limited.ingress_url, timeout=30) as http:
        for _ in range(40):
            started = time.monotonic()
            response = await invoke(http, key)
            assert response.status_code == 200, response.text
            await asyncio.sleep(max(0.05 - (time.monotonic() - started), 0))
    assert _admissions(limited, "lease") - before >= 20

    # A burst after a quiet spell (the bucket full, no lease out): the limit is admitted, plus at
    # most what refills while the burst is decided (docs/budgets.md: one second's allowance plus
    # the rate times the interval), leases included. At least the limit: a refusal recalls the
    # leases that may hold unused slices (one router's, granted as its last requests were sent
    # per request) and waits for them, instead of refusing while the key is under its limit
    # (before rate recalls: 39 of 40 was seen). A slow burst hides that gap (what refills while
    # it is decided makes up for a slice held unused: 44 to 59 were admitted here without
    # recalls); tests/test_rate_recall.py shows it exactly.
    await asyncio.sleep(QUIET_S)
    lease_before = _admissions(limited, "lease")
    openai, anthropic, elapsed = await _burst(limited, key)
    first = sum(r.status_code == 200 for r in openai + anthropic)
    assert RPS <= first <= RPS + RPS * elapsed, (first, elapsed)
    assert _admissions(limited, "lease") > lease_before  # leases admitted during the burst too
    _check_refusals(openai, anthropic)

    # A second burst at once, while the first one's leases are still out: across both, never
    # more than the bound over the time both took.
    started = time.monotonic() - elapsed
    again_openai, again_anthropic, _ = await _burst(limited, key)
    total = first + sum(r.status_code == 200 for r in again_openai + again_anthropic)
    assert total <= RPS + RPS * (time.monotonic() - started), (total, time.monotonic() - started)
    _check_refusals(again_openai, again_anthropic)

    # Every request has its ledger row: served ones `ok`, refused ones `rejected` / rate_limited.
    answers = openai + anthropic + again_openai + again_anthropic
    expected = {
        r.headers["x-request-id"]: ("ok", "") if r.status_code == 200 else ("rejected", "rate_limited")
        for r in answers
    }
    assert len(expected) == 2 * BURST
    rows = await wait_for_rows(
        limited.nats.url,
        "SELECT request_id, status, error_code FROM requests FINAL WHERE request_id IN {ids:Array(String)}",
        len(expected),
        {"ids": list(expected)},
        timeout_s=30,
    )
    assert {r["request_id"]: (r["status"], r["error_code"]) for r in rows} == expected
