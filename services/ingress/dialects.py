"""The HTTP APIs the ingress serves, and how an error reaches a caller in its own API's shape.

Each API implements api_kit.HttpApi; the app registers `HTTP_APIS` in one loop and serves them
all through one path (Ingress.relay).
"""

from __future__ import annotations

from nats.nuid import NUID

from switchyard.errors import RETRYABLE_CODES, GatewayError

from .anthropic_api import AnthropicApi
from .api_kit import HttpApi
from .native import NativeApi
from .openai_api import OpenAIApi

NATIVE: HttpApi = NativeApi()
OPENAI: HttpApi = OpenAIApi()
ANTHROPIC: HttpApi = AnthropicApi()
HTTP_APIS: tuple[HttpApi, ...] = (NATIVE, OPENAI, ANTHROPIC)

_nuid = NUID()


def new_request_id() -> str:
    return "req_" + _nuid.next().decode()


def dialect_for_path(path: str) -> HttpApi:
    """The error shape a client of this path expects (also for unknown paths under /v1)."""
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return ANTHROPIC
    if path.startswith("/v1/") and not path.startswith("/v1/requests/"):
        return OPENAI
    return NATIVE


def error_headers(error: GatewayError, request_id: str, dialect: HttpApi) -> dict[str, str]:
    """Retry-After when known, and `x-should-retry`, which the OpenAI and Anthropic SDKs obey
    before their own status-code rules: a spent budget (429) must not be retried, an
    unavailable pool (503) may be."""
    headers = {"x-should-retry": "true" if error.code in RETRYABLE_CODES else "false"}
    if error.retry_after_s:
        headers["Retry-After"] = str(max(1, round(error.retry_after_s)))
    if request_id:
        headers.update(request_id_headers(request_id, dialect))
    return headers


def request_id_headers(request_id: str, dialect: HttpApi) -> dict[str, str]:
    """`x-request-id` always, plus the header this dialect's SDKs read, if it differs."""
    return {"x-request-id": request_id, dialect.request_id_header: request_id}
