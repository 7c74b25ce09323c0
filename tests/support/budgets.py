"""Helpers for budget tests against a running Stack: requests, spend, alert events, a webhook
receiver."""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import nats
import orjson
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from prometheus_client.parser import text_string_to_metric_families

from switchyard import subjects
from switchyard.testing.stack import Stack, wait_until
from switchyard.v1 import events_pb2

# Demo replies fill max_tokens exactly, and the demo bills the estimator's prompt tokens: a
# request's actual cost equals its reservation, so counts against a cap are exact.
BODY = {"model": "demo/fast", "max_tokens": 24, "messages": [{"role": "user", "content": "hello"}]}


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def invoke(http: httpx.AsyncClient, key: str) -> httpx.Response:
    return await http.post("/llm.invoke", json=BODY, headers=bearer(key))


async def burst(base_url: str, key: str, count: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as http:
        return await asyncio.gather(*[invoke(http, key) for _ in range(count)])


def spend(stack: Stack, project: str) -> dict:
    r = stack.admin("GET", "/spend", params={"project": project})
    assert r.status_code == 200, r.text
    return r.json()


def scope_spent(status: dict, scope: str, period: str = "day") -> Decimal:
    for entry in status["scopes"]:
        if entry["scope"] == scope:
            return Decimal(entry["periods"][period]["spent_usd"])
    return Decimal(0)


async def settled_cost(stack: Stack, key: str, project: str) -> Decimal:
    """The cost of one request, once the authority has settled it into the project's spend."""
    async with httpx.AsyncClient(base_url=stack.ingress_url, timeout=30) as http:
        cost = Decimal((await invoke(http, key)).json()["cost_usd"])
    wait_until(
        lambda: scope_spent(spend(stack, project), f"project:{project}") == cost,
        timeout_s=20,
        what="settlement",
    )
    return cost


def set_budget(stack: Stack, scope: str, scope_id: str, period: str, cap: Decimal, **extra) -> None:
    body = {"scope": scope, "scope_id": scope_id, "period": period, "cap_usd": str(cap), **extra}
    r = stack.admin("PUT", "/budgets", json=body)
    assert r.status_code == 200, r.text

    def seen() -> bool:  # the authority picks budgets up from its KV watch
        for entry in spend(stack, "")["scopes"]:
            for b in entry["budgets"]:
                if entry["scope"] == f"{scope}:{scope_id}" and b["period"] == period:
                    return Decimal(b["cap_usd"]) == cap
        return False

    wait_until(seen, 20, what="the budget authority to see the cap")


def metric(url: str, name: str, **labels: str) -> float:
    """A sample from a service's /metrics (0 when absent)."""
    for family in text_string_to_metric_families(httpx.get(url, timeout=5).text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


async def alert_events(nats_url: str) -> list[events_pb2.BudgetAlert]:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(
            subjects.BUDGET_ALERT,
            stream=subjects.EVENTS_STREAM,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE),
        )
        pending = (await sub.consumer_info()).num_pending or 0
        msgs = await sub.fetch(pending, timeout=5) if pending else []
        await sub.unsubscribe()
        return [events_pb2.BudgetAlert.FromString(m.data) for m in msgs]
    finally:
        await nc.close()


class WebhookReceiver:
    """A local HTTP endpoint that records POSTed JSON; the first `fail_first` calls get a 500."""

    def __init__(self, fail_first: int = 1) -> None:
        self.received: list[tuple[dict, dict]] = []
        self.calls = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.calls += 1
                if receiver.calls <= fail_first:
                    self.send_response(500)
                    self.end_headers()
                    return
                receiver.received.append((orjson.loads(body), dict(self.headers)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
