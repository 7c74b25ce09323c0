"""Who may read the dashboard: a Host allowlist and a login, as one pure-ASGI middleware.

The dashboard shows every project's requests and ledger rows, so it must not answer just anyone
who can reach its port — nor a web page the operator happens to open: with DNS rebinding, a page
on `evil.example` can make the browser send requests to 127.0.0.1 with `Host: evil.example`.

- Host allowlist: a request whose Host header (port ignored) is not in
  SWITCHYARD_DASHBOARD_ALLOWED_HOSTS (loopback names by default) gets 421 Misdirected Request.
  `*` turns the check off (only behind a proxy that checks Host itself).
- Login: every page and read needs the dashboard token, either as `Authorization: Bearer`
  (the admin token is accepted there too) or as the HttpOnly, SameSite=Strict cookie that
  `GET /login?token=<dashboard token>` sets before redirecting to `/`. The dashboard token is
  derived from the admin token (tenancy.dashboard_token): it reads the dashboard and nothing
  else, so the link `make run` prints cannot change tenancy or budgets.
- Open without a token: `/healthz` (no data, and probes send whatever Host they like) and
  `/static/*` (the vendored page code). A refused read gets 401 and learns nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

import orjson

from switchyard.tenancy import dashboard_token, same_secret

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "switchyard_dashboard"
OPEN_PATHS = frozenset({"/healthz"})
LOGIN_HINT = (
    "log in with the dashboard link `make run` prints (/login?token=<dashboard token>), "
    "or send Authorization: Bearer <admin token>"
)


def parse_allowed_hosts(text: str) -> frozenset[str]:
    """`127.0.0.1,localhost,::1` -> the names, lowercase, without brackets (pure)."""
    return frozenset(h.strip().lower().strip("[]") for h in text.split(",") if h.strip())


def host_name(host_header: str) -> str:
    """The name in a Host header without its port: `[::1]:8081` -> `::1` (pure)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() and ":" not in name else host


def host_allowed(host_header: str | None, allowed: Iterable[str]) -> bool:
    allowed = set(allowed)
    if "*" in allowed:
        return True
    return host_header is not None and host_name(host_header) in allowed


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or []:
        if key == name:
            return value.decode("latin-1")
    return None


def _cookie(scope: Scope, name: str) -> str:
    raw = _header(scope, b"cookie")
    if not raw:
        return ""
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except Exception:  # a malformed Cookie header authenticates nothing
        return ""
    morsel = jar.get(name)
    return morsel.value if morsel else ""


async def _respond(
    send: Send, status: int, body: bytes, content_type: bytes, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _error(send: Send, status: int, code: str, message: str) -> None:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    await _respond(send, status, body, b"application/json")


class DashboardAccess:
    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str], admin_token: Callable[[], str]) -> None:
        self.app = app
        self.allowed_hosts = frozenset(allowed_hosts)
        self._admin_token = admin_token

    def _authenticated(self, scope: Scope) -> bool:
        admin = self._admin_token()
        if not admin:
            return False
        reader = dashboard_token(admin)
        authorization = _header(scope, b"authorization") or ""
        scheme, _, presented = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and presented.strip():
            presented = presented.strip()
            return same_secret(presented, reader) or same_secret(presented, admin)
        return same_secret(_cookie(scope, COOKIE), reader)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if not host_allowed(_header(scope, b"host"), self.allowed_hosts):
            await _error(
                send,
                421,
                "misdirected_request",
                "this Host is not one the dashboard answers to (SWITCHYARD_DASHBOARD_ALLOWED_HOSTS)",
            )
            return
        if path.startswith("/static/"):
            await self.app(scope, receive, send)
            return
        if path == "/login":
            await self._login(scope, send)
            return
        if not self._authenticated(scope):
            await _error(send, 401, "unauthorized", f"the dashboard needs a login: {LOGIN_HINT}")
            return
        await self.app(scope, receive, send)

    async def _login(self, scope: Scope, send: Send) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        presented = (query.get("token") or [""])[0]
        admin = self._admin_token()
        if not admin or not same_secret(presented, dashboard_token(admin)):
            await _error(send, 401, "unauthorized", f"wrong or missing token: {LOGIN_HINT}")
            return
        cookie = f"{COOKIE}={presented}; Path=/; HttpOnly; SameSite=Strict"
        # 303 to the page: the token leaves the address bar, the cookie carries on.
        await _respond(
            send,
            303,
            b"",
            b"text/plain",
            [(b"location", b"/"), (b"set-cookie", cookie.encode("latin-1"))],
        )
