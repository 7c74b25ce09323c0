"""The HTTP APIs the ingress serves, and how an error reaches a caller in its own API's shape.

Each API implements api_kit.HttpApi; the app registers `HTTP_APIS` in one loop and serves them
all through one path (Ingress.relay). An error answered by the edge itself (body too large, load
shed, no API key, unknown path) is rendered here, in the dialect of the path the caller used, so
an OpenAI or Anthropic SDK sees its own error shape for those too.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from nats.nuid import NUID

from switchyard.errors import RETRYABLE_CODES, GatewayError

from .anthropic_api import AnthropicApi, CountTokensApi
from .api_kit import HttpApi
from .completions_api import CompletionsApi
from .edge import Scope, Send
from .embeddings_api import EmbeddingsApi
from .exchange import count
from .native import NativeApi
from .openai_api import OpenAIApi
from .responses_api import ResponsesApi

NATIVE: HttpApi = NativeApi()
OPENAI: HttpApi = OpenAIApi()
ANTHROPIC: HttpApi = AnthropicApi()
EMBEDDINGS: HttpApi = EmbeddingsApi()
COMPLETIONS: HttpApi = CompletionsApi()
COUNT_TOKENS: HttpApi = CountTokensApi()
RESPONSES = ResponsesApi()
HTTP_APIS: tuple[HttpApi, ...] = (NATIVE, OPENAI, ANTHROPIC, RESPONSES, EMBEDDINGS, COMPLETIONS, COUNT_TOKENS)

_nuid = NUID()


def new_request_id() -> str:
    return "req_" + _nuid.next().decode()


def dialect_for_path(path: str) -> HttpApi:
    """The error shape a client of this path expects (also for unknown paths under /v1)."""
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return ANTHROPIC
    if path.startswith("/v1/") and not path.startswith("/v1/requests/") and path != "/v1/usage":
        return OPENAI  # the gateway's own reads (a request's row, usage) answer natively
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


def edge_error(
    path: str, error: GatewayError, status: int = 0, request_id: str = ""
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """(status, headers, body) of an error answered before a request is published, in the
    dialect of `path`, with a request id of its own unless one is given (a refusal the ingress
    records in the ledger, a 413, passes the id of its row). `status` overrides the dialect's
    for limits no error code names (431, 408)."""
    dialect = dialect_for_path(path)
    request_id = request_id or new_request_id()
    dialect_status, payload = dialect.render_error(error, request_id)
    body = orjson.dumps(payload)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in error_headers(error, request_id, dialect).items()),
    ]
    return status or dialect_status, headers, body


def api_label(path: str) -> str:
    """The `api` metrics label of a request refused before it was published: the API whose
    dialect its path speaks, or "admin" for the admin API."""
    return "admin" if path.startswith("/admin/") else dialect_for_path(path).name


def count_refusal(path: str, error: GatewayError) -> None:
    """Count a request answered with `error` before it was published (exchange.count)."""
    count(api_label(path), error.code)


async def reject(
    scope: Scope,
    send: Send,
    error: GatewayError,
    status: int = 0,
    headers: Sequence[tuple[bytes, bytes]] = (),
    request_id: str = "",
) -> None:
    """Answer `error` from ASGI middleware (edge limits, authentication), in the caller's
    dialect (see edge_error); `headers` are added (WWW-Authenticate, say). Counted here, so
    every refusal of the edge and of authentication is in the request metrics."""
    count_refusal(scope.get("path", ""), error)
    status, base, body = edge_error(scope.get("path", ""), error, status, request_id)
    await send({"type": "http.response.start", "status": status, "headers": [*base, *headers]})
    await send({"type": "http.response.body", "body": body})
