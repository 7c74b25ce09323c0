"""Upstream failures -> one neutral GatewayError (code, message, provider status, retryable,
Retry-After). Pure: status codes, headers and body bytes in, an error out.

Retryable (another deployment may succeed): connect errors, timeouts, 408, 409, 429, 5xx and
Anthropic's 529 overloaded, and 401/403 — the provider refusing the gateway's own key
(`provider_auth_failed`: another deployment has another key, and the caller's key was fine).
Not retryable: the other 4xx (400/404/413/422), which would fail the same way anywhere.

Client-facing messages name the provider and what went wrong, never a host, a port or a
library's exception text: those go into `GatewayError.detail` (logs and the ledger's attempt
rows, which are for operators).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any

import aiohttp
import orjson

from switchyard.errors import ErrorCode, GatewayError
from switchyard.logs import redact

# upstream HTTP status -> (neutral code, retryable)
STATUS_CODES: dict[int, tuple[str, bool]] = {
    400: (ErrorCode.INVALID_REQUEST, False),
    401: (ErrorCode.PROVIDER_AUTH_FAILED, True),
    403: (ErrorCode.PROVIDER_AUTH_FAILED, True),
    404: (ErrorCode.NOT_FOUND, False),
    408: (ErrorCode.TIMEOUT, True),
    409: (ErrorCode.UPSTREAM_ERROR, True),
    413: (ErrorCode.PAYLOAD_TOO_LARGE, False),
    422: (ErrorCode.UNPROCESSABLE, False),
    429: (ErrorCode.RATE_LIMITED, True),
    500: (ErrorCode.UPSTREAM_ERROR, True),
    502: (ErrorCode.UPSTREAM_ERROR, True),
    503: (ErrorCode.UNAVAILABLE, True),
    504: (ErrorCode.TIMEOUT, True),
    529: (ErrorCode.OVERLOADED, True),
}
MAX_MESSAGE_CHARS = 500
MAX_RETRY_AFTER_S = 3600.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")  # google.protobuf.Duration as JSON ("30s")


def classify_status(status: int) -> tuple[str, bool]:
    if status in STATUS_CODES:
        return STATUS_CODES[status]
    if status >= 500:
        return ErrorCode.UPSTREAM_ERROR, True
    return ErrorCode.INVALID_REQUEST, False


def retry_after_seconds(headers: Mapping[str, str], now: datetime | None = None) -> float:
    """`retry-after-ms` (OpenAI, Azure), else `Retry-After` as seconds or an HTTP date; 0 if none."""
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms:
        with contextlib.suppress(ValueError):
            return _clamp(float(raw_ms) / 1000.0)
    raw = lowered.get("retry-after", "").strip()
    if not raw:
        return 0.0
    try:
        return _clamp(float(raw))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return 0.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return _clamp((when - (now or datetime.now(UTC))).total_seconds())


def _clamp(seconds: float) -> float:
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def error_details(body: bytes) -> tuple[str, str, dict[str, Any]]:
    """(type, message, raw error object) from any provider's error body.

    OpenAI / Mistral: {"error": {"message", "type", "code", "param"}}; Mistral also
    {"object": "error", "message", "type"} and {"detail": [...]} (422). Anthropic:
    {"type": "error", "error": {"type", "message"}}. Gemini: {"error": {"code", "message",
    "status", "details"}}. Anything else: the body text.
    """
    data = _json(body)
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0]  # Gemini's streaming endpoint (without alt=sse) wraps errors in an array
    if not isinstance(data, dict):
        text = body.decode("utf-8", "replace").strip()
        return "", text[:MAX_MESSAGE_CHARS], {}
    err = data.get("error")
    if isinstance(err, dict):
        kind = err.get("type") or err.get("status") or err.get("code") or ""
        return str(kind), str(err.get("message") or ""), err
    if isinstance(err, str):
        return "", err, data
    if "detail" in data:
        detail = data["detail"]
        return "validation_error", detail if isinstance(detail, str) else orjson.dumps(detail).decode(), data
    message = data.get("message") or ""
    if not isinstance(message, str):  # Mistral's 422: {"message": {"detail": [...]}}
        message = orjson.dumps(message).decode()
    return str(data.get("type") or ""), message, data


def _google_retry_delay(err: Mapping[str, Any]) -> float:
    for detail in err.get("details") or []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return _clamp(float(match.group(1)))
    return 0.0


def _google_reasons(err: Mapping[str, Any]) -> set[str]:
    return {str(d.get("reason")) for d in err.get("details") or [] if isinstance(d, dict) and d.get("reason")}


def _reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"


def error_from_response(provider: str, status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
    """The neutral error for an upstream HTTP error response."""
    kind, message, err = error_details(body)
    code, retryable = classify_status(status)
    if kind == "overloaded_error":  # Anthropic: 529, also seen on 503 and inside streams
        code, retryable = ErrorCode.OVERLOADED, True
    if "API_KEY_INVALID" in _google_reasons(err):  # Gemini answers a bad key with 400
        code, retryable = ErrorCode.PROVIDER_AUTH_FAILED, True
    retry_after = retry_after_seconds(headers) or _google_retry_delay(err)
    label = f"{status} {kind}".strip()
    text = redact(message or _reason_phrase(status))
    full = f"{provider} returned {label}: {text}"[:MAX_MESSAGE_CHARS]
    if code == ErrorCode.PROVIDER_AUTH_FAILED:
        # The upstream's text ("Incorrect API key provided: sk-…") is about the gateway's key:
        # the operator's to read, and it would read to the caller as if their own key were bad.
        return GatewayError(
            code,
            f"{provider} refused the gateway's credentials for this deployment ({status})",
            retryable=retryable,
            provider_status=status,
            retry_after_s=retry_after,
            provider=provider,
            detail=full,
        )
    return GatewayError(
        code, full, retryable=retryable, provider_status=status, retry_after_s=retry_after, provider=provider
    )


def error_from_stream_event(provider: str, payload: Mapping[str, Any]) -> GatewayError:
    """An error delivered inside a 200 stream (Anthropic `event: error`, OpenAI-style `{"error": ...}`)."""
    error = payload.get("error")
    err: Mapping[str, Any] = error if isinstance(error, dict) else payload
    kind = str(err.get("type") or err.get("status") or err.get("code") or "error")
    message = redact(str(err.get("message") or "error"))
    code, retryable = {
        "overloaded_error": (ErrorCode.OVERLOADED, True),
        "rate_limit_error": (ErrorCode.RATE_LIMITED, True),
        "api_error": (ErrorCode.UPSTREAM_ERROR, True),
        "invalid_request_error": (ErrorCode.INVALID_REQUEST, False),
        "RESOURCE_EXHAUSTED": (ErrorCode.RATE_LIMITED, True),
        "UNAVAILABLE": (ErrorCode.UNAVAILABLE, True),
        "INTERNAL": (ErrorCode.UPSTREAM_ERROR, True),
    }.get(kind, (ErrorCode.UPSTREAM_ERROR, True))
    status = payload.get("status_code") or err.get("code")
    return GatewayError(
        code,
        f"{provider} stream error {kind}: {message}"[:MAX_MESSAGE_CHARS],
        retryable=retryable,
        provider_status=status if isinstance(status, int) else 0,
        provider=provider,
    )


def error_from_exception(provider: str, exc: BaseException, phase: str = "") -> GatewayError:
    """Transport failures (aiohttp's exceptions): nothing, or not everything, came back. The
    message says what happened in the caller's terms; the exception's text (a host and port, a
    library's error name) is the operator's, in `detail`."""
    where = f" ({phase})" if phase else ""
    detail = f"{type(exc).__name__}: {redact(str(exc))}"[:MAX_MESSAGE_CHARS]
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        code, message = ErrorCode.TIMEOUT, f"connecting to {provider} timed out{where}"
    elif isinstance(exc, aiohttp.ServerTimeoutError):
        code, message = ErrorCode.TIMEOUT, f"{provider} timed out{where}"
    elif isinstance(exc, aiohttp.ClientConnectorError):  # refused, DNS, TLS handshake, proxy
        code, message = ErrorCode.UNAVAILABLE, f"could not connect to {provider}"
    elif isinstance(
        exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError)
    ):
        code, message = ErrorCode.UPSTREAM_ERROR, f"{provider} closed the connection{where}"
    elif isinstance(exc, aiohttp.ClientResponseError):  # a status line or headers that do not parse
        code, message = ErrorCode.UPSTREAM_ERROR, f"{provider} sent an invalid HTTP response{where}"
    else:
        code, message = ErrorCode.UPSTREAM_ERROR, f"{provider} transport error{where}"
    return GatewayError(code, message, provider=provider, detail=detail)
