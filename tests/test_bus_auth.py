"""The bus boundary (switchyard/busauth.py): the permissions derived from the subjects, the
server configuration and credential files (pure), and — against the real stack on a real
nats-server — that a client without credentials, or with another service's, cannot do what
only one service may do, while the stack itself works end to end (docs/reliability.md)."""

from __future__ import annotations

import asyncio
import json
import stat
import time
from pathlib import Path

import httpx
import nats
import pytest
from nats.js.errors import NoStreamResponseError

from switchyard import busauth, subjects
from switchyard.busauth import ADMIN, ANALYST, BUDGET, INGRESS, LEDGER, PROVIDERS, ROLES, ROUTER, may
from switchyard.settings import Settings
from switchyard.testing.stack import Stack, wait_for_rows

SERVICES = [r for r in ROLES if r != ADMIN]
LEASE_WRITE = f"$KV.{subjects.BUDGET_LEASE_BUCKET}.leader"
TENANCY_INFO = f"$JS.API.STREAM.INFO.KV_{subjects.TENANCY_BUCKET}"


# --- the permissions, pure -------------------------------------------------------------------


def test_only_the_budget_service_answers_authorizations_and_holds_the_lease() -> None:
    for role in SERVICES:
        assert may(role, "subscribe", subjects.BUDGET_AUTHORIZE) == (role == BUDGET), role
        assert may(role, "publish", LEASE_WRITE) == (role == BUDGET), role
    assert permissions_of(BUDGET).allow_responses


def test_only_the_router_and_the_workers_publish_completions() -> None:
    publishers = {r for r in SERVICES if may(r, "publish", subjects.COMPLETION)}
    assert publishers == {ROUTER, PROVIDERS}
    # The ledger and the budget read them through their consumers, and nobody subscribes raw.
    assert {r for r in SERVICES if may(r, "publish", "$JS.API.CONSUMER.MSG.NEXT.EVENTS.x")} == {
        LEDGER,
        BUDGET,
    }
    assert not any(may(r, "subscribe", subjects.COMPLETION) for r in SERVICES)


def test_prompts_and_replies_reach_only_their_services() -> None:
    invoke = subjects.provider_invoke("openai")
    assert {r for r in SERVICES if may(r, "subscribe", invoke)} == {PROVIDERS}
    assert {r for r in SERVICES if may(r, "subscribe", subjects.INVOKE)} == {ROUTER}
    for role in SERVICES:
        # Each reads its own inbox only: nobody else's replies, nobody every reply.
        assert may(role, "subscribe", f"_INBOX.{role}.abc.1")
        assert not may(role, "subscribe", "_INBOX.>") and not may(role, "subscribe", "_INBOX.x.1")
        others = [o for o in SERVICES if o != role]
        assert not any(may(role, "subscribe", f"_INBOX.{o}.abc.1") for o in others), role
    # Answer frames go to the ingress's inbox from the router (errors) and the workers.
    assert {r for r in SERVICES if may(r, "publish", "_INBOX.ingress.n.req")} == {ROUTER, PROVIDERS}


def test_tenancy_bucket_is_read_by_ingress_and_budget_and_written_by_the_ingress_only() -> None:
    assert {r for r in SERVICES if may(r, "publish", TENANCY_INFO)} == {INGRESS, BUDGET}
    writes = f"$KV.{subjects.TENANCY_BUCKET}.key.key_1"
    assert {r for r in SERVICES if may(r, "publish", writes)} == {INGRESS}
    # The ingress touches no other bucket or stream beyond its ledger-lag probe.
    for bucket in (subjects.BUDGET_LEASE_BUCKET, subjects.BUDGET_ALERTS_BUCKET):
        assert not may(INGRESS, "publish", f"$JS.API.STREAM.INFO.KV_{bucket}")
    assert not may(INGRESS, "publish", f"$JS.API.CONSUMER.CREATE.{subjects.EVENTS_STREAM}")
    assert may(
        INGRESS, "publish", f"$JS.API.CONSUMER.INFO.{subjects.EVENTS_STREAM}.{subjects.LEDGER_DURABLE}"
    )


def test_stored_responses_are_kept_by_the_ingress_only() -> None:
    bucket = subjects.RESPONSES_BUCKET
    assert {r for r in SERVICES if may(r, "publish", f"$JS.API.STREAM.CREATE.KV_{bucket}")} == {INGRESS}
    assert {r for r in SERVICES if may(r, "publish", f"$KV.{bucket}.resp_1")} == {INGRESS}


def test_the_analyst_may_only_query_the_ledger() -> None:
    perms = permissions_of(ANALYST)
    assert set(perms.publish) == {"$JS.API.INFO", subjects.LEDGER_SQL}
    assert perms.subscribe == ("_INBOX.analyst.>",)
    assert busauth.permissions(ADMIN) is None
    with pytest.raises(ValueError, match="unknown bus role"):
        busauth.permissions("mallory")


def test_subject_matching() -> None:
    assert busauth.subject_matches("a.*.c", "a.b.c") and not busauth.subject_matches("a.*.c", "a.b.c.d")
    assert busauth.subject_matches("a.>", "a.b.c") and not busauth.subject_matches("a.>", "a")
    assert not busauth.subject_matches("a.b", "a") and not busauth.subject_matches("a", "a.b")


def permissions_of(role: str) -> busauth.Permissions:
    perms = busauth.permissions(role)
    assert perms is not None
    return perms


# --- configuration and credential files, pure -------------------------------------------------


def test_server_config_has_every_user_and_authenticated_routes() -> None:
    passwords = busauth.new_passwords()
    cluster = busauth.ClusterSpec("sy", "127.0.0.1:6000", ("127.0.0.1:6001",))
    config = json.loads(busauth.server_config(passwords, cluster))
    users = {u["user"]: u for u in config["authorization"]["users"]}
    assert set(users) == set(ROLES)
    assert "permissions" not in users[ADMIN]
    assert users[BUDGET]["permissions"]["subscribe"]["allow"] == list(permissions_of(BUDGET).subscribe)
    assert users[BUDGET]["password"] == passwords[BUDGET]
    assert config["cluster"]["authorization"] == {"user": "route", "password": passwords["route"]}
    assert config["cluster"]["routes"] == [f"nats://route:{passwords['route']}@127.0.0.1:6001"]


def test_passwords_are_created_once_in_owner_only_files(tmp_path: Path) -> None:
    folder = tmp_path / "bus"
    first = busauth.load_or_create_passwords(folder)
    assert busauth.load_or_create_passwords(folder) == first
    assert len(set(first.values())) == len(first)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for role in ROLES:
        path = busauth.password_file(folder, role)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    env = busauth.service_env(folder, ROUTER)
    settings = Settings(
        nats_user=env["SWITCHYARD_NATS_USER"], nats_password_file=env["SWITCHYARD_NATS_PASSWORD_FILE"]
    )
    assert settings.nats_credentials == busauth.BusCredentials(ROUTER, first[ROUTER])
    assert settings.nats_credentials.inbox_prefix == "_INBOX.router"
    assert first[ROUTER] not in repr(settings)
    assert (
        busauth.role_of_module("services.providers") == PROVIDERS
        and busauth.role_of_module("bench.x") is None
    )


def test_clickhouse_password_is_added_to_the_dsn_at_run_time(tmp_path: Path) -> None:
    secret = tmp_path / "ch"
    secret.write_text("p@ss/word\n")
    settings = Settings(clickhouse_dsn="http://switchyard@clickhouse:8123", clickhouse_password_file=secret)
    assert settings.ledger_dsn == "http://switchyard:p%40ss%2Fword@clickhouse:8123"
    assert "p%40ss" not in settings.shown_ledger_dsn and "***" in settings.shown_ledger_dsn
    assert Settings(clickhouse_dsn="http://clickhouse:8123").ledger_dsn == "http://clickhouse:8123"


def test_admin_token_from_a_file(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("sy-admin-shared\n")
    assert Settings(admin_token_file=token).configured_admin_token == "sy-admin-shared"
    assert Settings(admin_token="inline").configured_admin_token == "inline"


# --- enforced by nats-server, against the running stack ---------------------------------------


async def connect_as(stack: Stack, role: str) -> tuple[nats.aio.client.Client, list[Exception]]:
    """A connection with `role`'s credentials; permission errors the server sends are kept."""
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    assert stack.bus_dir is not None
    creds = busauth.credentials(stack.bus_dir, role)
    nc = await nats.connect(
        stack.nats.address,
        user=creds.user,
        password=creds.password,
        inbox_prefix=creds.inbox_prefix,
        error_cb=on_error,
        allow_reconnect=False,
    )
    return nc, errors


def violations(errors: list[Exception], subject: str) -> list[Exception]:
    # nats-py lower-cases the whole error text
    return [
        e for e in errors if "permissions violation" in str(e).lower() and subject.lower() in str(e).lower()
    ]


async def refused(errors: list[Exception], subject: str) -> list[Exception]:
    """The server's refusals of `subject`, waited for: nats-py hands the server's -ERR to the
    error callback in a task of its own, which may run after the call that caused it returns."""
    deadline = time.monotonic() + 5
    while not (found := violations(errors, subject)) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return found


async def test_no_credentials_or_a_wrong_password_cannot_connect(stack: Stack) -> None:
    for kwargs in ({}, {"user": BUDGET, "password": "guess"}, {"user": "nobody", "password": "x"}):
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(stack.nats.address, allow_reconnect=False, connect_timeout=5, **kwargs)


async def subscribe_refused(stack: Stack, role: str, subject: str, probe: str | None) -> None:
    """`role` subscribing to `subject` is refused by the server, and a message the admin then
    publishes on `probe` (a subject `subject` covers, that no service serves) never reaches it."""
    nc, errors = await connect_as(stack, role)
    admin = await nats.connect(stack.nats.url)
    try:
        got: list[bytes] = []

        async def on_msg(msg) -> None:
            got.append(msg.data)

        await nc.subscribe(subject, cb=on_msg)
        await nc.flush()
        if probe is not None:
            await admin.publish(probe, b"probe")
            await admin.flush()
        await nc.flush()  # anything the server routed to `nc` arrived before this PONG
        assert await refused(errors, subject), errors
        assert got == []
    finally:
        await nc.close()
        await admin.close()


async def test_another_services_credentials_cannot_take_the_budget_role(stack: Stack) -> None:
    await subscribe_refused(stack, INGRESS, subjects.BUDGET_AUTHORIZE, None)
    await subscribe_refused(stack, ROUTER, subjects.BUDGET_AUTHORIZE, None)
    # Nor the lease: the bucket cannot even be opened.
    nc, errors = await connect_as(stack, INGRESS)
    try:
        with pytest.raises((nats.errors.TimeoutError, NoStreamResponseError)):
            await nc.jetstream(timeout=1).key_value(subjects.BUDGET_LEASE_BUCKET)
        await nc.publish(LEASE_WRITE, b"ingress:1")
        await nc.flush()
        assert await refused(errors, LEASE_WRITE)
    finally:
        await nc.close()


async def test_another_services_credentials_cannot_read_prompts_or_replies(stack: Stack) -> None:
    await subscribe_refused(stack, INGRESS, "provider.*.invoke", subjects.provider_invoke("nobody"))
    await subscribe_refused(stack, INGRESS, "_INBOX.>", "_INBOX.router.x.1")
    await subscribe_refused(stack, LEDGER, "_INBOX.ingress.>", "_INBOX.ingress.x.1")
    await subscribe_refused(stack, ANALYST, subjects.INVOKE, None)


async def test_another_services_credentials_cannot_forge_a_completion(stack: Stack) -> None:
    nc, errors = await connect_as(stack, INGRESS)
    admin = await nats.connect(stack.nats.url)
    try:
        with pytest.raises((nats.errors.TimeoutError, NoStreamResponseError)):
            await nc.jetstream(timeout=1).publish(
                subjects.COMPLETION, b"forged", headers={"Nats-Msg-Id": "f1"}
            )
        assert await refused(errors, subjects.COMPLETION)
        js = admin.jetstream()
        await js.stream_info(subjects.EVENTS_STREAM)
        try:
            last = await js.get_last_msg(subjects.EVENTS_STREAM, subjects.COMPLETION)
        except nats.js.errors.NotFoundError:
            return  # no completion stored at all, so not the forged one
        assert last.data != b"forged"
    finally:
        await nc.close()
        await admin.close()


async def test_other_services_cannot_read_the_tenancy_bucket(stack: Stack) -> None:
    for role in (ROUTER, PROVIDERS, LEDGER, ANALYST):
        nc, errors = await connect_as(stack, role)
        try:
            with pytest.raises((nats.errors.TimeoutError, NoStreamResponseError)):
                await nc.jetstream(timeout=1).key_value(subjects.TENANCY_BUCKET)
            assert await refused(errors, TENANCY_INFO), (role, errors)
        finally:
            await nc.close()
    await subscribe_refused(
        stack, ROUTER, f"$KV.{subjects.TENANCY_BUCKET}.>", f"$KV.{subjects.TENANCY_BUCKET}.x"
    )


async def test_no_service_can_run_sql(stack: Stack) -> None:
    """Only the analyst may send `ledger.sql`: every service, the ingress and the budget
    included (they read the ledger through typed subjects), is refused by the server."""
    for role in (INGRESS, ROUTER, PROVIDERS, LEDGER, BUDGET):
        nc, errors = await connect_as(stack, role)
        try:
            with pytest.raises(nats.errors.TimeoutError):
                await nc.request(subjects.LEDGER_SQL, b'{"sql": "SELECT 1"}', timeout=1)
            assert await refused(errors, subjects.LEDGER_SQL), (role, errors)
        finally:
            await nc.close()


async def test_the_analyst_runs_sql_and_the_authenticated_stack_serves_end_to_end(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.ingress_url, headers=stack.headers, timeout=30) as http:
        r = await http.post(
            "/llm.invoke", json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
        )
    assert r.status_code == 200, r.text
    request_id = r.json()["request_id"]
    await wait_for_rows(
        stack.nats.url, "SELECT 1 FROM requests FINAL WHERE request_id = {id:String}", 1, {"id": request_id}
    )
    nc, errors = await connect_as(stack, ANALYST)
    try:
        reply = await nc.request(
            subjects.LEDGER_SQL,
            json.dumps({"sql": "SELECT 1 AS one"}).encode(),
            timeout=10,
            headers={"Authorization": f"Bearer {stack.admin_token}"},
        )
        assert json.loads(reply.data)["rows"] == [[1]]
        assert errors == []
    finally:
        await nc.close()
    # Every service did its work within its permissions.
    await asyncio.sleep(0)
    denied = [s.name for s in stack.services if "permissions violation" in s.log().lower()]
    assert denied == [], stack.logs()
