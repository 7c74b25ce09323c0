"""The dashboard's Host allowlist and login (services/ledger/dashboard/access.py): pure, the app
driven in memory through httpx's ASGI transport."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from services.ledger.dashboard.access import (
    COOKIE,
    DashboardAccess,
    host_allowed,
    host_name,
    parse_allowed_hosts,
)
from switchyard.tenancy import dashboard_token

ADMIN = "sy-admin-test-token-0123456789"
LOOPBACK = parse_allowed_hosts("127.0.0.1, localhost, [::1]")


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("127.0.0.1:8081", "127.0.0.1"),
        ("LocalHost", "localhost"),
        ("[::1]:8081", "::1"),
        ("[::1]", "::1"),
        ("evil.example:80", "evil.example"),
        ("::1", "::1"),  # bare IPv6 (not valid in Host, but never mistaken for a port)
    ],
)
def test_host_name_drops_the_port(header: str, name: str) -> None:
    assert host_name(header) == name


def test_only_allowed_hosts_pass() -> None:
    assert {"127.0.0.1", "localhost", "::1"} == LOOPBACK
    assert host_allowed("localhost:8081", LOOPBACK)
    assert not host_allowed("evil.example", LOOPBACK)
    assert not host_allowed("127.0.0.1.evil.example", LOOPBACK)
    assert not host_allowed(None, LOOPBACK) and not host_allowed("", LOOPBACK)
    assert host_allowed("anything", parse_allowed_hosts("*"))


def _client() -> httpx.AsyncClient:
    async def page(request):
        return PlainTextResponse("rows")

    inner = Starlette(routes=[Route("/", page), Route("/api/recent", page), Route("/healthz", page)])
    app = DashboardAccess(inner, LOOPBACK, lambda: ADMIN)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8081")


async def test_reads_need_the_dashboard_token_a_cookie_or_the_admin_token() -> None:
    token = dashboard_token(ADMIN)
    async with _client() as http:
        assert (await http.get("/api/recent")).status_code == 401
        assert (await http.get("/", headers={"authorization": "Bearer nope"})).status_code == 401
        http.cookies.set(COOKIE, "nope")
        assert (await http.get("/")).status_code == 401
        http.cookies.clear()
        assert (await http.get("/", headers={"authorization": f"Bearer {token}"})).text == "rows"
        assert (await http.get("/", headers={"authorization": f"Bearer {ADMIN}"})).text == "rows"
        assert (await http.get("/healthz")).text == "rows"  # probes: no login, any Host
        assert (await http.get("/healthz", headers={"host": "10.1.2.3"})).status_code == 200

        assert (await http.get("/login?token=nope")).status_code == 401
        login = await http.get(f"/login?token={token}")
        assert login.status_code == 303 and login.headers["location"] == "/"
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert (await http.get("/api/recent")).text == "rows"  # the cookie jar now has it


async def test_a_foreign_host_is_refused_even_with_the_token() -> None:
    async with _client() as http:
        r = await http.get(
            "/api/recent", headers={"host": "evil.example", "authorization": f"Bearer {ADMIN}"}
        )
        assert r.status_code == 421 and r.json()["error"]["code"] == "misdirected_request"
        assert (
            await http.get(f"/login?token={dashboard_token(ADMIN)}", headers={"host": "evil.example"})
        ).status_code == 421
