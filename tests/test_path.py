"""One request end to end through real processes: ingress -> NATS -> router -> worker -> ingress,
with the completion event in the ClickHouse (chDB) ledger."""

from __future__ import annotations

from decimal import Decimal

import httpx
import orjson
import pytest

from switchyard.catalog import demo_deployments
from switchyard.pricing import cost_usd
from switchyard.testing.stack import Stack, wait_for_rows

HELLO = {"model": "auto", "messages": [{"role": "user", "content": "hello there"}]}


def parse_sse(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], orjson.loads(lines["data"])))
    return events


async def test_plain_request_answers_and_lands_in_the_ledger(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.ingress_url, headers=stack.headers) as http:
        r = await http.post("/llm.invoke", json=HELLO)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["request_id"].startswith("req_")
    assert body["provider"] == "demo"
    assert body["message"]["role"] == "assistant"
    assert "hello there" in body["message"]["content"]
    assert body["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    deployment = {d.id: d for d in demo_deployments()}[body["deployment"]]
    expected = cost_usd(deployment.price, usage["prompt_tokens"], usage["completion_tokens"])
    assert Decimal(body["cost_usd"]) == expected
    assert body["attempts"][0]["status"] == "ok"
    assert body["rationale"]["winner"] == body["deployment"]

    rows = await wait_for_rows(
        stack.nats.url,
        "SELECT * FROM requests FINAL WHERE request_id = {id:String}",
        1,
        {"id": body["request_id"]},
    )
    row = rows[0]
    assert row["status"] == "ok"
    assert row["deployment_id"] == body["deployment"]
    assert row["prompt_tokens"] == usage["prompt_tokens"]
    assert row["completion_tokens"] == usage["completion_tokens"]
    assert Decimal(row["cost_usd"]) == expected
    assert row["trace_id"] and len(row["trace_id"]) == 32
    assert row["overhead_ms"] >= 0 and row["latency_ms"] >= row["overhead_ms"]
    attempts = await wait_for_rows(
        stack.nats.url,
        "SELECT * FROM attempts FINAL WHERE request_id = {id:String}",
        1,
        {"id": body["request_id"]},
    )
    assert attempts[0]["status"] == "ok"


async def test_streaming_request_sends_chunks_then_final(stack: Stack) -> None:
    payload = dict(HELLO, stream=True, max_tokens=6, model="demo/smart")
    async with httpx.AsyncClient(base_url=stack.ingress_url, headers=stack.headers) as http:
        r = await http.post("/llm.invoke", json=payload)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    kinds = [kind for kind, _ in events]
    assert kinds == ["chunk"] * 6 + ["final"]
    text = "".join(data["delta"] for kind, data in events if kind == "chunk")
    final = events[-1][1]
    assert final["message"]["content"] == text
    assert final["usage"]["completion_tokens"] == 6
    assert final["finish_reason"] == "length"
    rows = await wait_for_rows(
        stack.nats.url, "SELECT stream, completion_tokens FROM requests FINAL WHERE request_id = {id:String}", 1,
        {"id": final["request_id"]},
    )  # fmt: skip
    assert rows[0]["stream"] is True
    assert rows[0]["completion_tokens"] == 6


@pytest.mark.parametrize(
    ("body", "status", "code", "needle"),
    [
        (b"{not json", 400, "invalid_request", "not valid JSON"),
        (b"[1, 2]", 400, "invalid_request", "JSON object"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', 400, "invalid_request", "model"),
        (b'{"model": "auto"}', 400, "invalid_request", "messages"),
        (b'{"model": "auto", "messages": []}', 400, "invalid_request", "messages"),
        (b'{"model": "auto", "messages": [{"role": "robot", "content": "x"}]}', 400, "invalid_request", "role"),
        (b'{"model": "auto", "max_tokens": "many", "messages": [{"role": "user", "content": "x"}]}', 400,
         "invalid_request", "max_tokens"),
        (b'{"model": "auto", "temperature": 9, "messages": [{"role": "user", "content": "x"}]}', 400,
         "invalid_request", "temperature"),
        (b'{"model": "auto", "surprise": 1, "messages": [{"role": "user", "content": "x"}]}', 400,
         "invalid_request", "surprise"),
        (b'{"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}', 404, "model_not_found",
         "no-such-model"),
    ],
)  # fmt: skip
async def test_malformed_requests_get_a_clear_4xx(
    stack: Stack, body: bytes, status: int, code: str, needle: str
) -> None:
    async with httpx.AsyncClient(base_url=stack.ingress_url, headers=stack.headers) as http:
        r = await http.post("/llm.invoke", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code
    assert needle in error["message"]
    assert "Traceback" not in r.text


async def test_unknown_model_on_a_stream_is_an_http_error_not_an_empty_stream(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.ingress_url, headers=stack.headers) as http:
        r = await http.post("/llm.invoke", json=dict(HELLO, model="nope/nope", stream=True))
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"


async def test_rejected_requests_are_recorded_too(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.ingress_url, headers=stack.headers) as http:
        r = await http.post("/llm.invoke", json=dict(HELLO, model="nope/never"))
    request_id = r.json()["error"]["request_id"]
    rows = await wait_for_rows(
        stack.nats.url,
        "SELECT status, error_code FROM requests FINAL WHERE request_id = {id:String}",
        1,
        {"id": request_id},
    )
    assert rows[0] == {"status": "rejected", "error_code": "model_not_found"}


async def test_request_lookup_returns_the_ledger_row(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.ingress_url, headers=stack.headers) as http:
        request_id = (await http.post("/llm.invoke", json=HELLO)).json()["request_id"]
        await wait_for_rows(
            stack.nats.url,
            "SELECT 1 FROM requests FINAL WHERE request_id = {id:String}",
            1,
            {"id": request_id},
        )
        r = await http.get(f"/v1/requests/{request_id}")
        missing = await http.get("/v1/requests/req_missing")
    assert r.status_code == 200
    row = r.json()
    assert row["request_id"] == request_id
    assert row["attempts"][0]["deployment_id"] == row["deployment_id"]
    assert row["rationale"]["winner"] == row["deployment_id"]
    assert missing.status_code == 404


async def test_ledger_sql_refuses_writes(stack: Stack) -> None:
    from switchyard.testing.stack import ledger_sql

    with pytest.raises(RuntimeError, match="read-only"):
        await ledger_sql(stack.nats.url, "DROP TABLE requests")
    with pytest.raises(RuntimeError, match="read-only"):
        await ledger_sql(stack.nats.url, "SELECT 1; DROP TABLE requests")
