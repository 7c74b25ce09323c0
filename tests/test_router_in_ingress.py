"""SWITCHYARD_ROUTER_MODE=ingress through real processes: NATS, ledger (chDB), budget authority,
a demo and an OpenAI worker pool (against the fake OpenAI upstream), and TWO ingress processes,
each running the router itself. No router process runs (docs/architecture.md, "Where the
router runs"). The module runs twice: with the worker pools as processes, and with
SWITCHYARD_WORKER_MODE=ingress, each ingress running a worker for both pools as well (no
worker process; the hand-off and the reply frames stay in the process: "Where the worker runs").

What is asserted can fail: who decided each route (the rationale's `decided_by` names the
ingress's own pid), what the client got (answers, SSE chunks, in-band errors, statuses), what
the upstream saw (which deployment it was called for), the ledger's rows and the authority's
spend (exact, as Decimal). Waits are bounded polls, never timed assertions.
"""

from __future__ import annotations

import asyncio
import signal
import tempfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from services.ingress.app import Ingress
from services.ingress.colocated import MissingRouterCredentials, MissingWorkerCredentials
from switchyard.settings import Settings
from switchyard.testing.stack import ServiceProc, Stack, running, wait_for_rows, wait_until
from tests.fakes import OpenAIFake
from tests.fakes.base import Behavior
from tests.support.budgets import invoke, metric, scope_spent, set_budget, settled_cost, spend

pytestmark = pytest.mark.timeout(300)  # several processes start together on a machine others load

CONFIG = """
[[deployments]]
id = "openai/first"
provider = "openai"
model = "gpt-first"
base_url = "{base_url}"
api_key = "sk-colo"
price = {{ input = 3.0, output = 15.0 }}

[[deployments]]
id = "openai/second"
provider = "openai"
model = "gpt-second"
base_url = "{base_url}"
api_key = "sk-colo"
price = {{ input = 3.0, output = 15.0 }}

[routes.pair]
deployments = ["openai/first", "openai/second"]
strategy = "cheapest"

[routes.cached]
deployments = ["openai/second"]
cache = {{ ttl_s = 300 }}
"""


@pytest.fixture(scope="module")
def fake() -> Iterator[OpenAIFake]:
    upstream = OpenAIFake(api_key="sk-colo").start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module", params=["service", "ingress"], ids=["worker-service", "worker-ingress"])
def colo(request: pytest.FixtureRequest, fake: OpenAIFake) -> Iterator[tuple[Stack, list[ServiceProc]]]:
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-colo-"))
    config = workdir / "switchyard.toml"
    config.write_text(CONFIG.format(base_url=fake.base_url))
    stack = Stack.create(
        workdir,
        SWITCHYARD_ROUTER_MODE="ingress",
        SWITCHYARD_WORKER_MODE=request.param,
        SWITCHYARD_CONFIG_FILE=str(config),
        SWITCHYARD_DEMO_LATENCY_MS="2",
        SWITCHYARD_DEMO_CHUNK_DELAY_MS="1",
        SWITCHYARD_BUDGET_TIMEOUT_S="15",  # counts, not speed, on a loaded machine
        SWITCHYARD_MAX_BODY_BYTES=str(64 * 1024),  # a refused body is easy to send
        # Leases outlive the module: they go back only when a router gives them back (drain).
        SWITCHYARD_BUDGET_ESCROW_TTL_S="60",
    )
    with running(stack):
        stack.start_all(providers=("demo", "openai"))
        first = stack.by_name("ingress")[0]
        second = stack.spawn("ingress", "services.ingress")  # a second replica: a second router
        stack.ingress_url = url_of(first)  # the admin API's: the one that keeps running
        yield stack, [first, second]


def url_of(ingress: ServiceProc) -> str:
    return f"http://127.0.0.1:{ingress.env['SWITCHYARD_PORT']}"


@pytest.fixture(autouse=True)
def plain_upstream(fake: OpenAIFake) -> Iterator[None]:
    fake.reset()
    yield
    fake.reset()


def chat(base_url: str, key: str, payload: dict) -> httpx.Response:
    return httpx.post(
        f"{base_url}/llm.invoke", json=payload, headers={"authorization": f"Bearer {key}"}, timeout=30
    )


def test_no_router_process_runs_and_each_ingress_routes_its_own(
    colo: tuple[Stack, list[ServiceProc]],
) -> None:
    stack, ingresses = colo
    assert not [s for s in stack.services if s.name == "router"]
    workers_inside = stack.env["SWITCHYARD_WORKER_MODE"] == "ingress"
    assert bool([s for s in stack.services if s.name.startswith("worker-")]) is not workers_inside
    body = {"model": "demo/fast", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    for ingress in ingresses:
        r = chat(url_of(ingress), stack.api_key, body)
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["message"]["content"]
        # The rationale names the process that decided: this ingress itself.
        assert answer["rationale"]["decided_by"].endswith(f":{ingress.process.pid}")
        # The router's metrics are the ingress's: one /metrics for both.
        routed = metric(
            f"{url_of(ingress)}/metrics", "switchyard_requests_total", service="router", status="ok"
        )
        assert routed >= 1
        if workers_inside:  # and so did it call the provider: its worker's metrics are here too
            served = metric(
                f"{url_of(ingress)}/metrics", "switchyard_requests_total", service="providers", status="ok"
            )
            assert served >= 1


def bus_messages(stack: Stack, connection: str, direction: str) -> int:
    """What nats-server counted for the connections named `connection`: `in_msgs` they
    published, `out_msgs` delivered to them."""
    connz = httpx.get(f"{stack.nats.monitor_url}/connz?limit=1024", timeout=5).json()
    return sum(c[direction] for c in connz["connections"] if c.get("name") == connection)


def test_hand_offs_and_frames_stay_in_the_process_with_the_worker_inside(
    colo: tuple[Stack, list[ServiceProc]],
) -> None:
    """With the worker in the ingress, neither the hand-off (router -> worker) nor the reply
    frames (worker -> ingress) cross the bus: 60 requests move the routers' published count
    and the ingresses' delivered count by less than half a message each (what is left is
    background: lease renewals, the ledger-lag poll's answers). With worker processes, each
    request is at least one of each."""
    stack, ingresses = colo
    body = {"model": "demo/fast", "max_tokens": 8, "messages": [{"role": "user", "content": "count"}]}
    assert chat(url_of(ingresses[0]), stack.api_key, body).status_code == 200  # leases in hand
    handed = bus_messages(stack, "switchyard-router", "in_msgs")
    framed = bus_messages(stack, "switchyard-ingress", "out_msgs")
    for _ in range(60):
        assert chat(url_of(ingresses[0]), stack.api_key, body).status_code == 200
    handed = bus_messages(stack, "switchyard-router", "in_msgs") - handed
    framed = bus_messages(stack, "switchyard-ingress", "out_msgs") - framed
    if stack.env["SWITCHYARD_WORKER_MODE"] == "ingress":
        assert handed < 30 and framed < 30, (handed, framed)
    else:
        assert handed >= 60 and framed >= 60, (handed, framed)


def test_a_stream_is_served(colo: tuple[Stack, list[ServiceProc]]) -> None:
    stack, ingresses = colo
    body = {
        "model": "demo/fast",
        "max_tokens": 8,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    r = chat(url_of(ingresses[1]), stack.api_key, body)
    assert r.status_code == 200, r.text
    assert r.text.count("event: chunk") >= 2
    assert "event: final" in r.text and "event: error" not in r.text


async def test_failover_to_the_second_deployment(
    colo: tuple[Stack, list[ServiceProc]], fake: OpenAIFake
) -> None:
    stack, ingresses = colo
    fake.behave(Behavior(status=500), model="gpt-first")
    body = {"model": "pair", "max_tokens": 8, "messages": [{"role": "user", "content": "fail over"}]}
    r = chat(url_of(ingresses[0]), stack.api_key, body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["deployment"] == "openai/second"
    assert [a["deployment"] for a in answer["attempts"]] == ["openai/first", "openai/second"]
    assert [a.model for a in fake.requests] == ["gpt-first", "gpt-second"]
    rows = await wait_for_rows(
        stack.nats.url,
        "SELECT deployment_id, status FROM requests FINAL WHERE request_id = {id:String}",
        1,
        {"id": answer["request_id"]},
    )
    assert rows == [{"deployment_id": "openai/second", "status": "ok"}]


def test_a_second_identical_request_is_a_cache_hit(
    colo: tuple[Stack, list[ServiceProc]], fake: OpenAIFake
) -> None:
    stack, ingresses = colo
    fake.behave(Behavior(text="kept for later"))
    body = {
        "model": "cached",
        "max_tokens": 8,
        "temperature": 0,
        "messages": [{"role": "user", "content": "cache me"}],
    }
    first = chat(url_of(ingresses[0]), stack.api_key, body)
    assert first.status_code == 200, first.text

    def hit() -> httpx.Response | None:
        # The worker stores the answer just after sending it; the other ingress's router reads it.
        r = chat(url_of(ingresses[1]), stack.api_key, body)
        return r if r.headers.get("x-switchyard-cache") == "hit" else None

    second = wait_until(hit, 20, interval_s=0.2, what="a cache hit")
    assert second.json()["message"]["content"] == "kept for later"
    assert len(fake.requests) == 1  # the hit never reached the upstream


async def test_a_body_the_ingress_refuses_is_recorded(colo: tuple[Stack, list[ServiceProc]]) -> None:
    stack, ingresses = colo
    big = {"model": "demo/fast", "messages": [{"role": "user", "content": "x" * (80 * 1024)}]}
    r = chat(url_of(ingresses[0]), stack.api_key, big)
    assert r.status_code == 413, r.text
    rows = await wait_for_rows(
        stack.nats.url,
        "SELECT status, error_code FROM requests FINAL WHERE request_id = {id:String}",
        1,
        {"id": r.json()["error"]["request_id"]},
    )
    assert rows == [{"status": "rejected", "error_code": "payload_too_large"}]


async def test_two_ingress_routers_share_one_budget_exactly(colo: tuple[Stack, list[ServiceProc]]) -> None:
    stack, ingresses = colo
    key = stack.provision("colo-cap")
    cost = await settled_cost(stack, key, "colo-cap")
    set_budget(stack, "project", "colo-cap", "day", cost * 31)  # 30 more requests fit
    # Warm-up on each ingress, one at a time: each router's first request brings a lease back.
    for ingress in ingresses:
        async with httpx.AsyncClient(base_url=url_of(ingress), timeout=30) as http:
            for _ in range(3):
                assert (await invoke(http, key)).status_code == 200
    assert spend(stack, "colo-cap")["leases"] >= 1  # admitted from leases, not per request

    limits = httpx.Limits(max_connections=60)
    async with (
        httpx.AsyncClient(base_url=url_of(ingresses[0]), timeout=60, limits=limits) as one,
        httpx.AsyncClient(base_url=url_of(ingresses[1]), timeout=60, limits=limits) as two,
    ):
        responses = await asyncio.gather(*[invoke(http, key) for http in (one, two) for _ in range(40)])
    codes = [r.status_code for r in responses]
    # 7 spent before the burst: exactly 24 more fit, whichever router admitted them.
    assert codes.count(200) == 24, sorted({(r.status_code, r.text[:120]) for r in responses})
    assert codes.count(402) == 56
    wait_until(
        lambda: scope_spent(spend(stack, "colo-cap"), "project:colo-cap") == cost * 31,
        timeout_s=30,
        what="settlement up to the cap",
    )
    rows = await wait_for_rows(
        stack.nats.url,
        "SELECT request_id FROM requests FINAL WHERE project_id = 'colo-cap' AND status = 'ok'",
        31,
    )
    assert len(rows) == 31
    assert sum(metric(f"{url_of(i)}/metrics", "switchyard_router_budget_admissions_total", via="lease")
               for i in ingresses) >= 2  # fmt: skip


async def test_a_worker_killed_mid_stream_ends_it_in_band_with_a_row(
    colo: tuple[Stack, list[ServiceProc]], fake: OpenAIFake
) -> None:
    stack, ingresses = colo
    if stack.env["SWITCHYARD_WORKER_MODE"] == "ingress":
        pytest.skip("the worker is the ingress's process: killing it kills the client's connection too")
    fake.behave(Behavior(text=" ".join(f"w{i}" for i in range(40)), chunk_delay_s=0.5))
    body = {
        "model": "openai/first",
        "max_tokens": 60,
        "stream": True,
        "messages": [{"role": "user", "content": "kill the worker"}],
    }
    text = ""
    async with (
        httpx.AsyncClient(base_url=url_of(ingresses[0]), headers=stack.headers, timeout=60) as http,
        http.stream("POST", "/llm.invoke", json=body) as response,
    ):
        request_id = response.headers["x-request-id"]
        async for piece in response.aiter_text():
            text += piece
            if "event: chunk" in text and stack.by_name("worker-openai"):
                await asyncio.sleep(0.6)  # a beat reports what was delivered
                stack.by_name("worker-openai")[0].stop(signal.SIGKILL)
    assert "event: chunk" in text
    assert "event: error" in text and "unavailable" in text, text[-400:]
    assert "event: final" not in text
    rows = await wait_for_rows(
        stack.nats.url,
        "SELECT status, error_code FROM requests FINAL WHERE request_id = {id:String}",
        1,
        {"id": request_id},
    )
    assert rows == [{"status": "error", "error_code": "unavailable"}]


async def test_sigterm_gives_the_leases_back(colo: tuple[Stack, list[ServiceProc]]) -> None:
    stack, ingresses = colo
    key = stack.provision("colo-drain")
    set_budget(stack, "project", "colo-drain", "day", Decimal(10))
    async with httpx.AsyncClient(base_url=url_of(ingresses[1]), timeout=30) as http:
        for _ in range(3):
            assert (await invoke(http, key)).status_code == 200

    def reserved() -> Decimal:
        for entry in spend(stack, "colo-drain")["scopes"]:
            for budget in entry["budgets"]:
                if entry["scope"] == "project:colo-drain":
                    return Decimal(budget["reserved_usd"])
        return Decimal(0)

    # Settled, yet held: the rest of the lease the second ingress's router admits from (its
    # admit window is the module's 60 s).
    wait_until(lambda: scope_spent(spend(stack, "colo-drain"), "project:colo-drain") > 0, 20, what="settled")
    assert reserved() > 0
    assert ingresses[1].stop(signal.SIGTERM) == 0  # drained, exit 0
    # Its router gave the lease back on the way out: nothing is held for the project any more.
    wait_until(lambda: reserved() == 0, 10, what="the lease given back")


def test_an_ingress_with_a_bus_user_but_not_the_routers_is_refused_before_it_connects() -> None:
    bus_user = {"router_mode": "ingress", "nats_user": "ingress", "nats_password": "secret"}
    with pytest.raises(MissingRouterCredentials, match="SWITCHYARD_ROUTER_NATS_USER"):
        Ingress(Settings(**bus_user))
    # Given the router's user, it is built (and connects as that user when it starts).
    ingress = Ingress(Settings(**bus_user, router_nats_user="router", router_nats_password="p"))
    assert ingress.router is not None
    credentials = ingress.router.router.settings.router_nats_credentials
    assert credentials is not None and credentials.user == "router"


def test_an_ingress_with_a_bus_user_but_not_the_workers_is_refused_before_it_connects() -> None:
    bus_user = {"worker_mode": "ingress", "nats_user": "ingress", "nats_password": "secret"}
    with pytest.raises(MissingWorkerCredentials, match="SWITCHYARD_WORKER_NATS_USER"):
        Ingress(Settings(**bus_user))
    ingress = Ingress(Settings(**bus_user, worker_nats_user="providers", worker_nats_password="p"))
    assert ingress.worker is not None and ingress.router is None  # a worker, routed from elsewhere
    credentials = ingress.worker.worker.settings.worker_nats_credentials
    assert credentials is not None and credentials.user == "providers"
