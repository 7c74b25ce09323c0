"""API-key authentication at the ingress.

An ASGI middleware checks the key of every API request (`Authorization: Bearer <key>` or
`x-api-key: <key>`) against the tenancy view, which a KV watch keeps live, and puts the
caller's Identity in a context variable that `Ingress.stamp` reads. So every endpoint that
stamps a request (native, OpenAI-, Anthropic-compatible) is authenticated the same way.
Unknown, revoked or missing keys get 401 in the caller's API dialect (dialects.reject).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable

from nats.aio.client import Client as NATS
from starlette.types import ASGIApp, Receive, Scope, Send

from switchyard.errors import ErrorCode, GatewayError
from switchyard.settings import Settings
from switchyard.tenancy import ANONYMOUS, Identity, TenancyView, presented_key, same_secret
from switchyard.tenancy_store import TenancyWatcher, tenancy_bucket

from .dialects import reject

# Paths that need no API key: probes, metrics, and the admin API (it has its own token).
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})
ADMIN_PREFIX = "/admin/"

current_identity: contextvars.ContextVar[Identity | None] = contextvars.ContextVar(
    "switchyard_identity", default=None
)


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.view = TenancyView()
        self.watcher: TenancyWatcher | None = None

    async def start(self, nc: NATS) -> None:
        kv = await tenancy_bucket(nc.jetstream(), self.settings.stream_replicas)
        self.watcher = TenancyWatcher(kv, self.view)
        await self.watcher.start()

    async def stop(self) -> None:
        if self.watcher:
            await self.watcher.stop()

    def identify(self, authorization: str | None, x_api_key: str | None) -> Identity:
        secret = presented_key(authorization, x_api_key)
        if not secret and not self.settings.auth_required:
            return ANONYMOUS
        return self.view.authenticate(secret)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or []:
        if key == name:
            return value.decode("latin-1")
    return None


class AuthMiddleware:
    def __init__(
        self, app: ASGIApp, authenticator: Authenticator, admin_token: Callable[[], str] | None = None
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.admin_token = admin_token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        if path.startswith(ADMIN_PREFIX):
            # The admin API checks its token itself (admin.py); checking it here too refuses an
            # unauthenticated admin call before its body is read (docs/reliability.md, the edge).
            if self.admin_token is not None and not same_secret(
                presented_key(_header(scope, b"authorization"), None), self.admin_token()
            ):
                error = GatewayError(
                    ErrorCode.UNAUTHORIZED, "the admin API needs `Authorization: Bearer <admin token>`"
                )
                await reject(scope, send, error)
                return
            await self.app(scope, receive, send)
            return
        try:
            identity = self.authenticator.identify(
                _header(scope, b"authorization"), _header(scope, b"x-api-key")
            )
        except GatewayError as error:
            await reject(scope, send, error, 0, [(b"www-authenticate", b'Bearer realm="switchyard"')])
            return
        token = current_identity.set(identity)
        try:
            await self.app(scope, receive, send)
        finally:
            current_identity.reset(token)
