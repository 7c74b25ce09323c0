"""The ledger's read subjects against a real ledger process on a real NATS server (real chDB):

- ledger.read.request answers only within the asking project (typed, protobuf);
- ledger.read.spend answers the budget rebuild's snapshot, and a budget process started on it
  counts the stored spend;
- ledger.sql (analysts) refuses without the admin token; file(), url(), s3(), remote(),
  INTO OUTFILE, settings changes and SYSTEM statements are refused by the engine's read-only
  session (OUTFILE by the engine's own parse), with a clear error and never ClickHouse's text;
- a heavy analyst query is cut off at its time cap, while inserts go on beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import nats
import orjson
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS

from services.ledger.analyst import ENGINE_REFUSAL
from switchyard import busauth, subjects
from switchyard.bus import ensure_events_stream
from switchyard.testing.stack import ROOT, Stack, running
from switchyard.v1 import ledger_pb2
from tests.support.ledger_seed import completion_event

pytestmark = pytest.mark.asyncio(loop_scope="module")
SQL_CAP_S = 10  # the analyst time cap of this stack: a heavy query is cut off after it


@pytest.fixture(scope="module")
def ledger_stack() -> Iterator[Stack]:
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-ledger-reads-"))
    stack = Stack.create(
        workdir,
        SWITCHYARD_LEDGER_BATCH_WAIT_S="0.05",
        SWITCHYARD_LEDGER_SQL_MAX_EXECUTION_S=str(SQL_CAP_S),
        SWITCHYARD_LEDGER_SQL_MAX_THREADS="1",
        SWITCHYARD_LEDGER_SQL_MAX_RESULT_ROWS="1000",
    )
    with running(stack):
        stack.spawn("ledger", "services.ledger")
        yield stack


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def nc(ledger_stack: Stack) -> AsyncIterator[NATS]:
    client = await nats.connect(ledger_stack.nats.url)
    await ensure_events_stream(client.jetstream())
    yield client
    await client.close()


async def publish(nc: NATS, *events) -> None:
    js = nc.jetstream()
    for event in events:
        await js.publish(
            subjects.COMPLETION, event.SerializeToString(), headers={"Nats-Msg-Id": event.request_id}
        )


async def lookup(nc: NATS, request_id: str, project_id: str) -> ledger_pb2.RequestLookupReply:
    ask = ledger_pb2.RequestLookup(request_id=request_id, project_id=project_id)
    reply = await nc.request(subjects.LEDGER_READ_REQUEST, ask.SerializeToString(), timeout=10)
    return ledger_pb2.RequestLookupReply.FromString(reply.data)


async def stored(
    nc: NATS, request_id: str, project_id: str, timeout_s: float = 15.0
) -> ledger_pb2.LedgerRequest:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        reply = await lookup(nc, request_id, project_id)
        if reply.found:
            return reply.request
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{request_id} not stored")


async def sql(nc: NATS, query: str, token: str | None, timeout_s: float = 15.0) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else None
    reply = await nc.request(
        subjects.LEDGER_SQL, orjson.dumps({"sql": query}), timeout=timeout_s, headers=headers
    )
    return orjson.loads(reply.data)


# --- typed reads ------------------------------------------------------------------------------


async def test_request_lookup_answers_only_the_callers_project(nc: NATS) -> None:
    event = completion_event("req_lookup_a", at=datetime.now(UTC), project="alpha", cost="0.25",
                             failed_first_on="flaky")  # fmt: skip
    event.rationale.winner = "openai/gpt-4o-mini"
    event.rationale.route = "auto"
    event.rationale.candidates.add(deployment_id="openai/gpt-4o-mini", provider="openai", total=0.9)
    event.metadata["team"] = "search"
    await publish(nc, event)

    row = await stored(nc, "req_lookup_a", "alpha")
    assert (row.project_id, row.deployment_id, row.cost_usd) == (
        "alpha",
        "openai/gpt-4o-mini",
        "0.2500000000",
    )
    assert [a.deployment_id for a in row.attempts] == ["flaky/x", "openai/gpt-4o-mini"]
    assert row.failovers == 1 and row.attempts[0].http_status == 529
    assert row.rationale.winner == "openai/gpt-4o-mini" and row.rationale.candidates[0].total == 0.9
    assert dict(row.metadata) == {"team": "search"}
    assert row.ts_unix_ms == event.started_unix_ms

    other = await lookup(nc, "req_lookup_a", "beta")
    assert not other.found and not other.HasField("error") and not other.HasField("request")
    unscoped = await lookup(nc, "req_lookup_a", "")
    assert not unscoped.found and unscoped.error.code == "invalid_argument"


async def test_spend_snapshot_and_a_budget_rebuilt_from_it(ledger_stack: Stack, nc: NATS) -> None:
    now = datetime.now(UTC)
    events = [
        completion_event("req_spend_1", at=now, project="spender", cost="0.5"),
        completion_event("req_spend_2", at=now, project="spender", cost="0.125"),
        completion_event("req_spend_3", at=now, project="spender", agent="bot", cost="1"),
    ]
    await publish(nc, *events)
    for event in events:
        await stored(nc, event.request_id, "spender")

    ask = ledger_pb2.SpendSnapshotQuery(
        tail_request_ids=["req_spend_2"],
        day_start_unix_ms=int(now.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000),
        month_start_unix_ms=int(
            now.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000
        ),
        recent_since_unix_ms=0,
        journal_request_ids=["req_spend_1", "req_never"],
    )
    reply = await nc.request(subjects.LEDGER_READ_SPEND, ask.SerializeToString(), timeout=10)
    snapshot = ledger_pb2.SpendSnapshot.FromString(reply.data)
    assert not snapshot.HasField("error")
    scopes = {
        (s.agent_id, Decimal(s.total_usd), Decimal(s.day_usd))
        for s in snapshot.scopes
        if s.project_id == "spender"
    }
    assert scopes == {
        ("", Decimal("0.5"), Decimal("0.5")),
        ("bot", Decimal("1"), Decimal("1")),
    }  # the tail's left out
    assert list(snapshot.stored_journal_ids) == ["req_spend_1"]

    # A budget authority started now rebuilds from the ledger (these events are all acked, so
    # before its tail): its spend is the stored spend.
    js = nc.jetstream()
    deadline = asyncio.get_running_loop().time() + 15
    while asyncio.get_running_loop().time() < deadline:
        info = await js.consumer_info(subjects.EVENTS_STREAM, subjects.LEDGER_DURABLE)
        if info.num_ack_pending == 0 and info.num_pending == 0:
            break
        await asyncio.sleep(0.1)
    budget = ledger_stack.spawn("budget", "services.budget")
    status: dict = {"error": "not asked"}
    deadline = asyncio.get_running_loop().time() + 30
    while "error" in status and asyncio.get_running_loop().time() < deadline:
        with contextlib.suppress(nats.errors.NoRespondersError, nats.errors.TimeoutError):
            reply = await nc.request(subjects.BUDGET_STATUS, b'{"project": "spender"}', timeout=5)
            status = orjson.loads(reply.data)
        await asyncio.sleep(0.1)
    spent = {s["scope"]: s["periods"]["total"]["spent_usd"] for s in status["scopes"]}
    assert Decimal(spent["project:spender"]) == Decimal("1.625")
    assert Decimal(spent["agent:spender/bot"]) == Decimal("1")
    assert ", 0 events after its ack floor" in budget.log()  # all of it came from the snapshot
    budget.stop()


# --- analyst SQL ------------------------------------------------------------------------------


async def test_sql_refuses_without_the_admin_token(ledger_stack: Stack, nc: NATS) -> None:
    for token in (None, "", "not-the-token", ledger_stack.admin_token + "x"):
        reply = await sql(nc, "SELECT 1 AS one", token)
        assert reply == {
            "code": "unauthorized",
            "error": "the admin token is required (Authorization: Bearer)",
        }
    assert await sql(nc, "SELECT 1 AS one", ledger_stack.admin_token) == {"columns": ["one"], "rows": [[1]]}


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback port that counts as contacted if anything connects to it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    yield server
    server.close()


def contacted(server: socket.socket) -> bool:
    try:
        server.accept()[0].close()
    except BlockingIOError:
        return False
    return True


async def test_files_urls_outfile_and_settings_changes_are_refused(
    ledger_stack: Stack, nc: NATS, tmp_path: Path, listener: socket.socket
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cr3t-host-file\n")
    out = tmp_path / "out.sh"
    port = listener.getsockname()[1]
    token = ledger_stack.admin_token
    engine_refused = [
        f"SELECT * FROM file('{secret}', 'LineAsString')",
        f"SELECT * FROM url('http://127.0.0.1:{port}/x', 'LineAsString')",
        f"SELECT * FROM s3('http://127.0.0.1:{port}/bucket/x.csv', 'CSV')",
        f"SELECT * FROM remote('127.0.0.1:{port}', system.one)",
        f"SELECT count() FROM requests WHERE request_id IN (SELECT * FROM file('{secret}', 'LineAsString'))",
        "SELECT 1 SETTINGS max_execution_time = 0",
        "SELECT 1 SETTINGS readonly = 0",
        "SELECT getSetting('readonly') SETTINGS readonly = 2",
    ]
    for query in engine_refused:
        reply = await sql(nc, query, token)
        assert reply == {"code": "read_only", "error": ENGINE_REFUSAL}, query
    for query in (
        f"SELECT 'echo owned' INTO OUTFILE '{out}' APPEND",
        f"SELECT 1 UNION ALL SELECT 2 INTO OUTFILE '{out}'",
        f"SHOW TABLES INTO OUTFILE '{out}'",
        f"select 1 into   outfile '{out}' and stdout",
    ):
        reply = await sql(nc, query, token)
        assert reply["code"] == "read_only" and "INTO OUTFILE is not allowed" in reply["error"], query
    for query in (
        "SET readonly = 0",
        "SET max_execution_time = 0",
        "SYSTEM DROP DNS CACHE",
        "DROP TABLE requests",
        "INSERT INTO requests (request_id) VALUES ('forged')",
        "CREATE TABLE forged (a Int8) ENGINE = Memory",
        "SELECT 1; DROP TABLE requests",
    ):
        reply = await sql(nc, query, token)
        assert reply["code"] == "read_only" and "read-only statement" in reply["error"], query
    python_fn = await sql(nc, "SELECT * FROM python('x')", token)
    assert "error" in python_fn and "DB::Exception" not in python_fn["error"]
    assert not out.exists()
    assert not contacted(listener)
    # The session's caps are still in force, and reads still work.
    caps = await sql(nc, "SELECT getSetting('readonly') AS ro, getSetting('max_execution_time') AS t", token)
    assert caps["rows"] == [[1, float(SQL_CAP_S)]]
    # An engine error is a clear category, never ClickHouse's own text (that is in the log).
    for query in ("SELEC 1", "SELECT no_such_column FROM requests", "SELECT * FROM system.numbers"):
        reply = await sql(nc, query, token)
        assert "DB::Exception" not in reply["error"] and "Code:" not in reply["error"], reply
    assert (await sql(nc, "SELEC 1", token))["error"].startswith("syntax error at position ")
    assert (await sql(nc, "SELECT * FROM system.numbers", token))["code"] == "cut_off"
    assert "DB::Exception" in ledger_stack.by_name("ledger")[0].log()  # the full text went here


async def test_a_heavy_query_is_cut_off_while_inserts_continue(ledger_stack: Stack, nc: NATS) -> None:
    token = ledger_stack.admin_token
    await publish(nc, completion_event("req_warm", at=datetime.now(UTC), project="heavy"))
    await stored(nc, "req_warm", "heavy")
    heavy = asyncio.create_task(
        sql(nc, "SELECT sum(number) FROM numbers(1000000000000)", token, timeout_s=SQL_CAP_S * 6)
    )
    await asyncio.sleep(1.0)  # the query is running on the analyst connection
    events = [completion_event(f"req_beside_{i}", at=datetime.now(UTC), project="heavy") for i in range(20)]
    await publish(nc, *events)
    for event in events:  # stored (and read back) while the heavy query still runs
        await stored(nc, event.request_id, "heavy", timeout_s=SQL_CAP_S)
    assert not heavy.done()
    reply = await heavy
    assert reply["code"] == "cut_off" and f"longer than {SQL_CAP_S} s" in reply["error"], reply
    assert (await sql(nc, "SELECT count() AS n FROM requests WHERE project_id = 'heavy'", token))["rows"] == [
        [21]
    ]


async def test_the_cli_sends_the_admin_token_and_refuses_without_one(
    ledger_stack: Stack, tmp_path: Path
) -> None:
    command = [sys.executable, "-m", "switchyard.cli", "sql", "SELECT 40 + 2 AS answer"]
    # The CLI logs in to the bus as the analyst (docs/reliability.md, "The bus boundary").
    assert ledger_stack.bus_dir is not None
    analyst = {**ledger_stack.env, **busauth.service_env(ledger_stack.bus_dir, busauth.ANALYST)}
    ok = await asyncio.to_thread(
        subprocess.run, command, env=analyst, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines() == ["answer", "42"]
    # No token configured and none in the data folder: refused before anything is sent.
    env = {**analyst, "SWITCHYARD_ADMIN_TOKEN": "", "SWITCHYARD_DATA_DIR": str(tmp_path)}
    refused = await asyncio.to_thread(
        subprocess.run, command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 1 and "no admin token" in refused.stderr
    # A wrong token reaches the ledger, which refuses it.
    env["SWITCHYARD_ADMIN_TOKEN"] = "wrong"
    wrong = await asyncio.to_thread(
        subprocess.run, command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert wrong.returncode == 1 and "the admin token is required" in wrong.stderr


async def test_a_ledger_error_reaches_the_client_as_a_plain_500(tmp_path: Path) -> None:
    """The ingress against a ledger whose store fails: here the test answers ledger.read.request
    itself, as the ledger does when its query fails (a LedgerError, the store's text logged)."""
    stack = Stack.create(tmp_path)
    with running(stack):
        stack.spawn("ingress", "services.ingress")
        key = stack.provision("alpha")
        client = await nats.connect(stack.nats.url)
        asked: list[ledger_pb2.RequestLookup] = []

        async def failing_ledger(msg) -> None:
            asked.append(ledger_pb2.RequestLookup.FromString(msg.data))
            error = ledger_pb2.LedgerError(
                code="unavailable", message="the ledger could not read the request"
            )
            await msg.respond(ledger_pb2.RequestLookupReply(error=error).SerializeToString())

        await client.subscribe(subjects.LEDGER_READ_REQUEST, cb=failing_ledger)
        await client.flush()
        try:
            async with httpx.AsyncClient(base_url=stack.ingress_url, timeout=10) as http:
                r = await http.get("/v1/requests/req_x", headers={"authorization": f"Bearer {key}"})
        finally:
            await client.close()
    assert [(a.request_id, a.project_id) for a in asked] == [("req_x", "alpha")]  # typed, scoped
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "internal"
    assert r.json()["error"]["message"] == "the ledger could not read this request (unavailable)"
