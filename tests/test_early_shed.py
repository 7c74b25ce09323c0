"""Refusals for load from a request's head (services/ingress/early_shed.py), on real uvicorn
with the ingress's protocol: the same answer as the app's refusal, the same connection kept,
and everything the app answers otherwise (401, 431, 413, a slow body) still answered so."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn

from services.ingress.app import Ingress
from services.ingress.connections import ConnectionGuard, guarded_protocol
from services.ingress.early_shed import EarlyShed
from switchyard.natsserver import free_port
from switchyard.settings import Settings
from switchyard.tenancy import Project, issue_key, key_kv_key, project_kv_key

BODY = b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}]}'


class CountingApp:
    """The ingress's app, counting the requests that reached it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.calls += 1
        await self.app(scope, receive, send)


@asynccontextmanager
async def serving(
    ingress: Ingress, early: bool, guard: ConnectionGuard | None = None
) -> AsyncIterator[tuple[int, CountingApp]]:
    """The ingress's app on uvicorn with its protocol, refusing from the head when `early`."""
    port = free_port()
    shedder = EarlyShed(ingress.limits, ingress.overload, ingress.auth) if early else None
    app = CountingApp(ingress.app)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan="off",
        http=guarded_protocol(guard or ConnectionGuard(), shedder),
        log_config=None,
        server_header=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    try:
        for _ in range(100):  # bounded: 100 x 50 ms
            if server.started:
                break
            await asyncio.sleep(0.05)
        assert server.started
        yield port, app
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], bytes]:
    status = int((await asyncio.wait_for(reader.readline(), 10)).split()[1])
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    headers = dict(
        (name.strip().lower(), value.strip())
        for name, _, value in (line.partition(b":") for line in head.split(b"\r\n") if line)
    )
    body = await asyncio.wait_for(reader.readexactly(int(headers[b"content-length"])), 10)
    return status, headers, body


def request(path: str, key: str = "", body: bytes = BODY) -> bytes:
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{auth}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def shedding_ingress(**settings: object) -> Ingress:
    ingress = Ingress(Settings(max_in_flight=1, **settings))  # type: ignore[arg-type]
    ingress.overload.in_flight = 1  # at capacity: every API request is shed
    return ingress


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages", "/llm.invoke"])
async def test_the_early_refusal_is_the_apps_refusal(path: str) -> None:
    answers = {}
    for early in (False, True):
        async with serving(shedding_ingress(auth_required=False), early) as (port, app):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(request(path) * 2)  # two on one connection: it is kept
                answers[early] = [await read_answer(reader) for _ in range(2)]
            finally:
                writer.close()
        assert app.calls == (0 if early else 2)  # refused early, the app never saw them
    for (app_status, app_headers, app_body), (status, headers, body) in zip(
        answers[False], answers[True], strict=True
    ):
        assert status == app_status == (529 if path == "/v1/messages" else 503)
        request_id = headers[b"x-request-id"]
        assert re.fullmatch(rb"req_[0-9A-Za-z]{22}", request_id)
        # The same headers, but for the request id and the date, which are each answer's own.
        same = {k: v.replace(request_id, b"ID") for k, v in headers.items() if k != b"date"}
        app_same = {
            k: v.replace(app_headers[b"x-request-id"], b"ID") for k, v in app_headers.items() if k != b"date"
        }
        assert same == app_same and headers[b"retry-after"] == b"1"
        assert body.replace(request_id, b"ID") == app_body.replace(app_headers[b"x-request-id"], b"ID")


@pytest.mark.parametrize("early", [False, True], ids=["by-the-app", "from-the-head"])
async def test_a_shed_request_is_answered_once_its_body_is_in_and_keeps_its_connection(early: bool) -> None:
    """A 503 for load comes after the body is read, not before: a refusal sent before the body
    ends the connection (connections.py lingers and closes it), so a client under overload
    would pay a new connection for each refused request. Through the app or from the head."""
    async with serving(shedding_ingress(auth_required=False), early) as (port, _):
        whole = request("/v1/chat/completions")
        head, body = whole[: -len(BODY)], BODY
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(head)
            await writer.drain()
            with pytest.raises(TimeoutError):  # nothing is answered before the body is in
                await asyncio.wait_for(reader.read(1), 0.3)
            writer.write(body)
            await writer.drain()
            for _ in range(2):  # the refusal, then another request on the same connection
                status, headers, _ = await read_answer(reader)
                assert status == 503 and b"connection" not in headers and headers[b"retry-after"] == b"1"
                writer.write(whole)
                await writer.drain()
        finally:
            writer.close()


async def test_an_unknown_key_is_still_401_and_a_known_one_is_refused_for_load() -> None:
    ingress = shedding_ingress(auth_required=True)
    secret = known_key(ingress)
    async with serving(ingress, early=True) as (port, app):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request("/v1/chat/completions", key="sy-not-a-key"))
            status, _, _ = await read_answer(reader)
            assert status == 401
        finally:
            writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request("/v1/chat/completions", key=secret))
            status, headers, _ = await read_answer(reader)
            assert status == 503 and headers[b"retry-after"] == b"1"
        finally:
            writer.close()
        assert app.calls == 1  # the 401 only


async def test_limits_the_app_answers_are_left_to_it() -> None:
    ingress = shedding_ingress(auth_required=False, max_body_bytes=1000, max_header_bytes=2000)
    async with serving(ingress, early=True) as (port, app):
        for raw, expected in (
            (request("/v1/chat/completions", body=b"x" * 1001), 413),  # too large: recorded by the app
            (request("/v1/chat/completions").replace(b"Host:", b"X-Big: " + b"a" * 2100 + b"\r\nHost:"), 431),
            (request("/v1/chat/completions").replace(b"Content-Length: ", b"Content-Length: x"), 400),
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(raw)
                await writer.drain()
                status = int((await asyncio.wait_for(reader.readline(), 10)).split()[1])
                assert status == expected
            finally:
                writer.close()
        assert app.calls == 2  # the 413 and the 431; httptools itself refuses a length that is not a number


async def test_a_body_that_never_comes_gets_408_and_the_connection_ends() -> None:
    ingress = shedding_ingress(auth_required=False)
    guard = ConnectionGuard(body_timeout_s=0.5)
    async with serving(ingress, early=True, guard=guard) as (port, app):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request("/v1/chat/completions")[:-10])  # ten bytes of the body missing
            await writer.drain()
            status, headers, _ = await read_answer(reader)
            assert status == 408 and headers[b"connection"] == b"close"
            assert await asyncio.wait_for(reader.read(), 10) == b""  # closed
        finally:
            writer.close()
        assert app.calls == 0


def known_key(ingress: Ingress) -> str:
    """A key of project "p1" that the ingress's tenancy view knows (as its KV watch would)."""
    ingress.auth.view.apply(project_kv_key("p1"), Project(id="p1").to_bytes())
    record, secret = issue_key("p1")
    ingress.auth.view.apply(key_kv_key(record.id), record.to_bytes())
    assert ingress.auth.identify(f"Bearer {secret}", None).project_id == "p1"
    return secret


async def test_an_answer_before_the_body_says_the_connection_ends() -> None:
    # A 401 comes before the body is read; the connection then ends (connections.py, the
    # lingering close). Before, the answer did not say so, and a client that sent its next
    # request on that connection saw it cut ("Server disconnected without sending a response",
    # seen once in a full test run). Now the head says `connection: close`.
    ingress = Ingress(Settings(auth_required=True))
    async with serving(ingress, early=True) as (port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request("/v1/chat/completions", key="sy-not-a-key")[:-10])  # body not all in
            await writer.drain()
            status, headers, _ = await read_answer(reader)
            assert status == 401 and headers[b"connection"] == b"close"
        finally:
            writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:  # with the whole body in, the answer keeps the connection as before
            writer.write(request("/v1/chat/completions", key="sy-not-a-key") * 2)
            for _ in range(2):
                status, headers, _ = await read_answer(reader)
                assert status == 401 and b"connection" not in headers
        finally:
            writer.close()
