"""One request is one trace across every service process (ingress -> router -> budget ->
worker -> ledger), with GenAI semantic-convention attributes, exported both to per-process span
files (SWITCHYARD_SPAN_DIR) and over OTLP/HTTP to a collector; and the Prometheus metrics of every
service move when requests pass."""

from __future__ import annotations

import asyncio
import gzip
import tempfile
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from prometheus_client.parser import text_string_to_metric_families

from switchyard.spanfile import read_spans
from switchyard.testing.stack import ROUTER_MODES, Stack, running, wait_for_rows, wait_until

HELLO = {"model": "auto", "messages": [{"role": "user", "content": "trace me"}], "max_tokens": 12}
SERVICES = {"ingress", "router", "budget", "providers", "ledger"}


class Collector:
    """A minimal OTLP/HTTP trace receiver: decodes what the SDK exporter really sends."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, dict]] = []  # (service, trace id, attributes)
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                export = ExportTraceServiceRequest.FromString(body)
                for resource_spans in export.resource_spans:
                    service = next(
                        a.value.string_value
                        for a in resource_spans.resource.attributes
                        if a.key == "service.name"
                    )
                    for scope in resource_spans.scope_spans:
                        for span in scope.spans:
                            attrs = {a.key: a.value for a in span.attributes}
                            collector.spans.append((service, span.trace_id.hex(), attrs))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()


# Router processes by default; the trace test also runs with the ingress running the router
# itself (parametrized with ROUTER_MODES, indirect): one stack per mode for the module.
@pytest.fixture(scope="module", params=["service"])
def traced(request: pytest.FixtureRequest) -> Iterator[tuple[Stack, Path, Collector]]:
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-otel-"))
    collector = Collector()
    span_dir = workdir / "spans"
    stack = Stack.create(
        workdir,
        SWITCHYARD_ROUTER_MODE=request.param,
        SWITCHYARD_DEMO_LATENCY_MS="5",
        SWITCHYARD_SPAN_DIR=str(span_dir),
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.url,
        OTEL_BSP_SCHEDULE_DELAY="200",
    )
    try:
        with running(stack):
            stack.start_all()
            yield stack, span_dir, collector
    finally:
        collector.stop()


def trace_of(span_dir: Path, request_id: str) -> list[dict]:
    spans = read_spans(span_dir)
    roots = [
        s
        for s in spans
        if s["attributes"].get("switchyard.request_id") == request_id and not s["parent_span_id"]
    ]
    if not roots:
        return []
    trace_id = roots[0]["trace_id"]
    return [s for s in spans if s["trace_id"] == trace_id]


@pytest.mark.parametrize("traced", ROUTER_MODES, indirect=True)
async def test_one_request_is_one_trace_across_every_service(traced) -> None:
    stack, span_dir, collector = traced
    # With the router in the ingress process its spans are the ingress's, the shape the same.
    router_process = "ingress" if stack.router_mode == "ingress" else "router"
    services = SERVICES - {"router"} | {router_process}
    async with httpx.AsyncClient(base_url=stack.ingress_url, headers=stack.headers) as http:
        body = (await http.post("/llm.invoke", json=HELLO)).json()
    request_id = body["request_id"]

    def complete() -> list[dict]:
        spans = trace_of(span_dir, request_id)
        seen = {s["service"].removeprefix("switchyard-") for s in spans}
        return spans if seen >= services else []

    spans = wait_until(complete, 20, what="spans from every service")
    by_name = {s["name"]: s for s in spans}
    trace_id = spans[0]["trace_id"]
    assert {s["trace_id"] for s in spans} == {trace_id}

    # The shape: ingress root -> router -> (budget, worker dispatch -> upstream call -> ledger).
    root = by_name["chat auto"]
    assert root["kind"] == "SERVER" and root["parent_span_id"] == ""
    route = by_name["router.route"]
    assert route["parent_span_id"] == root["span_id"]
    assert route["service"].removeprefix("switchyard-") == router_process
    assert by_name["budget.authorize"]["parent_span_id"] == route["span_id"]
    dispatch = by_name["provider.dispatch"]
    assert dispatch["parent_span_id"] == route["span_id"]
    call = next(s for s in spans if s["kind"] == "CLIENT")
    assert call["parent_span_id"] == dispatch["span_id"]
    ledger = by_name["ledger.record"]
    assert ledger["parent_span_id"] == call["span_id"] and ledger["kind"] == "CONSUMER"

    # GenAI semantic conventions on the upstream call and on the ingress span.
    attrs = call["attributes"]
    assert call["name"] == f"chat {body['model']}"
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == body["provider"] == attrs["gen_ai.system"]
    assert attrs["gen_ai.request.model"] == attrs["gen_ai.response.model"] == body["model"]
    assert attrs["gen_ai.usage.input_tokens"] == body["usage"]["prompt_tokens"]
    assert attrs["gen_ai.usage.output_tokens"] == body["usage"]["completion_tokens"]
    assert attrs["gen_ai.response.finish_reasons"] == [body["finish_reason"]]
    assert root["attributes"]["gen_ai.request.model"] == "auto"
    assert root["attributes"]["gen_ai.request.max_tokens"] == 12
    assert root["attributes"]["gen_ai.response.model"] == body["model"]
    assert root["attributes"]["switchyard.cost_usd"] == body["cost_usd"]
    assert ledger["attributes"]["switchyard.replay"] is False

    # The ledger row names the same trace, so a row leads to its trace and back.
    rows = await wait_for_rows(
        stack.nats.url,
        "SELECT trace_id FROM requests FINAL WHERE request_id = {id:String}",
        1,
        {"id": request_id},
    )
    assert rows[0]["trace_id"] == trace_id

    # The same spans went out over OTLP/HTTP to the collector.
    def exported() -> set[str]:
        seen = {svc.removeprefix("switchyard-") for svc, tid, _ in collector.spans if tid == trace_id}
        return seen if seen >= services else set()

    assert wait_until(exported, 20, what="spans over OTLP") >= services


def scrape(url: str) -> dict[tuple, float]:
    samples = {}
    for family in text_string_to_metric_families(httpx.get(url, timeout=5).text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def total(samples: dict[tuple, float], name: str, **labels: str) -> float:
    return sum(
        value
        for (n, lbls), value in samples.items()
        if n == name and all(dict(lbls).get(k) == v for k, v in labels.items())
    )


async def test_metrics_of_every_service_move(traced) -> None:
    stack, _, _ = traced
    urls = {s.name: s.metrics_url for s in stack.services}
    urls["ingress"] = stack.ingress_url + "/metrics"
    before = {name: scrape(url) for name, url in urls.items()}
    async with httpx.AsyncClient(base_url=stack.ingress_url, headers=stack.headers) as http:
        ok = [(await http.post("/llm.invoke", json=HELLO)).json() for _ in range(3)]
        rejected = await http.post("/llm.invoke", json=dict(HELLO, model="nope/none"))
    assert rejected.status_code == 404
    ids = [b["request_id"] for b in ok] + [rejected.json()["error"]["request_id"]]
    await wait_for_rows(
        stack.nats.url,
        "SELECT 1 FROM requests FINAL WHERE request_id IN {ids:Array(String)}",
        4,
        {"ids": ids},
    )
    # The ledger's consumer-lag and ack-pending gauges are polled about once a second: wait
    # (bounded) for a poll after the rows were stored, not a fixed sleep a busy machine outlasts.
    deadline = time.monotonic() + 15
    while True:
        time.sleep(0.3)
        after = {name: scrape(url) for name, url in urls.items()}
        settled = ("switchyard_ledger_consumer_lag", ()) in after["ledger"] and not (
            total(after["ledger"], "switchyard_ledger_consumer_lag")
            or total(after["ledger"], "switchyard_ledger_ack_pending")
        )
        if settled or time.monotonic() > deadline:
            break

    def moved(proc: str, name: str, **labels: str) -> float:
        return total(after[proc], name, **labels) - total(before[proc], name, **labels)

    assert moved("ingress", "switchyard_requests_total", service="ingress", status="ok") == 3
    assert moved("ingress", "switchyard_errors_total", service="ingress", code="model_not_found") == 1
    assert moved("ingress", "switchyard_request_duration_seconds_count", service="ingress") == 4
    assert moved("router", "switchyard_requests_total", service="router", status="ok") == 3
    assert moved("router", "switchyard_errors_total", service="router", code="model_not_found") == 1
    # Each request admitted once by the budget: from a router's lease (no bus message) or by
    # the authority, whose own request count moves with those asks alone.
    by_lease = moved("router", "switchyard_router_budget_admissions_total", via="lease")
    by_authority = moved("router", "switchyard_router_budget_admissions_total", via="authority")
    assert by_lease + by_authority == 3
    assert moved("budget", "switchyard_requests_total", service="budget") == by_authority
    assert moved("worker-demo", "switchyard_requests_total", service="providers", status="ok") == 3
    assert moved("worker-demo", "switchyard_upstream_duration_seconds_count", provider="demo") == 3
    prompt = sum(b["usage"]["prompt_tokens"] for b in ok)
    completion = sum(b["usage"]["completion_tokens"] for b in ok)
    assert moved("worker-demo", "switchyard_tokens_total", kind="prompt") == prompt
    assert moved("worker-demo", "switchyard_tokens_total", kind="completion") == completion
    cost = sum(float(b["cost_usd"]) for b in ok)
    assert moved("worker-demo", "switchyard_cost_usd_total", project="default") == pytest.approx(cost)
    assert moved("ledger", "switchyard_ledger_rows_inserted_total", table="requests") == 4
    assert moved("ledger", "switchyard_requests_total", service="ledger", status="stored") == 4
    assert ("switchyard_ledger_consumer_lag", ()) in after["ledger"]
    assert total(after["ledger"], "switchyard_ledger_consumer_lag") == 0
    assert total(after["ledger"], "switchyard_ledger_ack_pending") == 0
    for service, name in [("ingress", "ingress"), ("router", "router"), ("worker-demo", "providers")]:
        assert total(after[service], "switchyard_in_flight_requests", service=name) == 0


# ---- the dashboard, in a real headless browser ------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


async def test_dashboard_api_answers_and_reports_budget_caps(traced) -> None:
    stack, _, _ = traced
    async with httpx.AsyncClient(base_url=stack.dashboard_url, headers=stack.dashboard_headers) as http:
        assert (await http.get("/api/budgets")).json() == {"caps": []}  # none set yet
        bad = await http.get("/api/overview?window=forever")
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request"
        missing = await http.get("/api/requests/req_nope")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        overview = (await http.get("/api/overview?window=24h")).json()
    assert overview["step_minutes"] == 15 and len(overview["series"]["t"]) >= 96
    # Caps set through the admin API reach the dashboard with the spend the authority counts.
    cap = {"scope": "project", "scope_id": "default", "period": "day", "cap_usd": "1.00"}
    assert stack.admin("PUT", "/budgets", json=cap).status_code == 200
    key_cap = {"scope": "key", "scope_id": stack.admin("GET", "/keys").json()["data"][0]["id"],
               "period": "month", "cap_usd": "2"}  # fmt: skip
    assert stack.admin("PUT", "/budgets", json=key_cap).status_code == 200

    # Poll until both caps show and the settled spend has caught up with the ledger.
    ledger_sum = "SELECT sum(cost_usd) AS s FROM requests FINAL WHERE project_id = 'default'"
    deadline = time.monotonic() + 30
    while True:
        async with httpx.AsyncClient(base_url=stack.dashboard_url, headers=stack.dashboard_headers) as http:
            caps = (await http.get("/api/budgets")).json()["caps"]
        spent = Decimal(str((await wait_for_rows(stack.nats.url, ledger_sum, 1))[0]["s"]))
        project_caps = [c for c in caps if c["scope_kind"] == "project"]
        if len(caps) == 2 and project_caps and Decimal(project_caps[0]["spent_usd"]) == spent:
            break
        assert time.monotonic() < deadline, (caps, spent)
        await asyncio.sleep(0.5)
    by_kind = {c["scope_kind"]: c for c in caps}
    project = by_kind["project"]
    assert project["scope_id"] == "default" and project["period"] == "day"
    assert Decimal(project["cap_usd"]) == Decimal("1")
    assert project["used_pct"] == pytest.approx(float(spent * 100), abs=0.01)
    assert by_kind["key"]["scope_id"] == key_cap["scope_id"] and Decimal(by_kind["key"]["cap_usd"]) == 2


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is not installed at /usr/bin/chromium (`make test` installs it with apt-get "
    "when run as root; otherwise: sudo apt-get install -y chromium)",
)
async def test_dashboard_in_a_headless_browser_shows_live_requests(traced) -> None:
    from playwright.async_api import async_playwright

    stack, _, _ = traced
    ARTIFACTS.mkdir(exist_ok=True)
    outside: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS, headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1440, "height": 1100})
            page.on(
                "request",
                lambda r: None if r.url.startswith(stack.dashboard_url) else outside.append(r.url),
            )
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(stack.dashboard_login_url)
            await page.wait_for_selector("#live.on", timeout=15_000)  # the SSE feed is connected
            await page.wait_for_selector("body[data-loaded=true]", timeout=15_000)
            assert await page.evaluate("typeof uPlot") == "function"  # the vendored chart library
            await page.wait_for_selector("#chart-spend canvas")
            # The caps set through the admin API (test above), with the authority's spend.
            await page.wait_for_selector("#budget-table")
            assert "project default" in await page.text_content("#budget-table")
            requests_before = await page.text_content("#kpi-requests")

            # A request made after the page loaded can only reach it by push.
            async with httpx.AsyncClient(base_url=stack.ingress_url, headers=stack.headers) as http:
                body = (await http.post("/llm.invoke", json=dict(HELLO, metadata={"agent": "ui"}))).json()
            row = page.locator(f'#feed tr[data-request-id="{body["request_id"]}"]')
            await row.wait_for(timeout=20_000)
            text = await row.inner_text()
            assert f"{body['provider']}/{body['model']}" in text and "ok" in text
            await page.wait_for_function(
                "before => document.querySelector('#kpi-requests').textContent !== before",
                arg=requests_before,
                timeout=15_000,
            )  # the aggregates refreshed because the feed said something was stored
            assert await page.locator("#providers tbody tr[data-provider='demo']").count() == 1
            await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

            # The trace view of that request: rationale, attempts with timings, tokens, cost.
            await row.click()
            await page.wait_for_selector("#trace[data-loaded=true]", timeout=15_000)
            trace_panel = await page.inner_text("#trace")
            assert body["request_id"] in trace_panel
            assert f"{body['usage']['prompt_tokens']} prompt" in trace_panel
            assert body["cost_usd"] in trace_panel
            assert await page.locator("#trace-attempts tbody tr").count() == len(body["attempts"])
            assert await page.locator("#trace-timeline .seg").count() == 1 + len(body["attempts"])
            winner = await page.inner_text("#trace-candidates tr.winner")
            assert body["rationale"]["winner"] in winner
            trace_id = (await page.inner_text("#trace-trace-id")).strip()
            assert len(trace_id) == 32 and trace_id != "0" * 32
            await page.screenshot(path=str(ARTIFACTS / "dashboard-trace.png"), full_page=False)
            assert not errors, errors
        finally:
            await browser.close()
    assert outside == [], f"the page fetched something not served by the dashboard: {outside}"
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
