"""How each HTTP API spells an answer and an error. The path through the gateway is the same
for all of them (Ingress.relay); only the rendering at the edge differs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from switchyard.errors import RETRYABLE_CODES, GatewayError
from switchyard.v1 import invoke_pb2
from switchyard.vocab import Api

from . import anthropic_api, native, openai_api


@dataclass(frozen=True)
class Dialect:
    name: str
    final_json: Callable[[invoke_pb2.InvokeRequest, invoke_pb2.InvokeResponse], dict[str, Any]]
    error_body: Callable[[GatewayError, str], tuple[int, dict[str, Any]]]
    # Where the SDKs of this API look for the request id.
    request_id_header: str = "x-request-id"


def _native_error(error: GatewayError, request_id: str) -> tuple[int, dict[str, Any]]:
    return error.http_status, native.error_json(error.code, error.message, request_id, error.param)


NATIVE = Dialect(Api.NATIVE, lambda request, final: native.response_json(final), _native_error)
OPENAI = Dialect(Api.OPENAI, openai_api.completion_json, lambda error, _: openai_api.error_body(error))
ANTHROPIC = Dialect(Api.ANTHROPIC, anthropic_api.message_json, anthropic_api.error_body, "request-id")


def dialect_for_path(path: str) -> Dialect:
    """The error shape a client of this path expects (also for unknown paths under /v1)."""
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return ANTHROPIC
    if path.startswith("/v1/") and not path.startswith("/v1/requests/"):
        return OPENAI
    return NATIVE


def error_headers(error: GatewayError, request_id: str, dialect: Dialect) -> dict[str, str]:
    """Retry-After when known, and `x-should-retry`, which the OpenAI and Anthropic SDKs obey
    before their own status-code rules: a spent budget (429) must not be retried, an
    unavailable pool (503) may be."""
    headers = {"x-should-retry": "true" if error.code in RETRYABLE_CODES else "false"}
    if error.retry_after_s:
        headers["Retry-After"] = str(max(1, round(error.retry_after_s)))
    if request_id:
        headers.update(request_id_headers(request_id, dialect))
    return headers


def request_id_headers(request_id: str, dialect: Dialect) -> dict[str, str]:
    """`x-request-id` always, plus the header this dialect's SDKs read, if it differs."""
    return {"x-request-id": request_id, dialect.request_id_header: request_id}
