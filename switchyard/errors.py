"""The provider-neutral error: one code vocabulary and one table of what each code means on
every surface.

`ErrorCode` names every code; `CODES` gives each its native HTTP status, whether another
deployment may succeed (retryable), its OpenAI and Anthropic error shapes and its gRPC status.
Every other mapping (the native status, the retryable set, the dialects' error bodies, the gRPC
status, the OpenAPI code enum) is derived from `CODES`, so a new code is added in one place and
a surface cannot silently miss it (tests/test_error_vocabulary.py checks every row is complete).
The gRPC status is kept by name so the kit does not import grpc; services/ingress/grpc_api.py
resolves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from switchyard import units
from switchyard.v1 import invoke_pb2


# A StrEnum, so a member is its wire string ("unavailable") in protobuf fields, JSON and labels.
class ErrorCode(StrEnum):
    """The neutral error code; docs/api.md (Errors) shows how each API renders it."""

    INVALID_REQUEST = "invalid_request"
    UNAUTHORIZED = "unauthorized"
    BUDGET_EXCEEDED = "budget_exceeded"
    PERMISSION_DENIED = "permission_denied"
    NOT_FOUND = "not_found"
    MODEL_NOT_FOUND = "model_not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONFLICT = "conflict"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNPROCESSABLE = "unprocessable"
    RATE_LIMITED = "rate_limited"
    CLIENT_CLOSED = "client_closed"
    INTERNAL = "internal"
    UPSTREAM_ERROR = "upstream_error"
    # The provider refused the gateway's own credentials (upstream 401/403): the operator's
    # problem, not the caller's key; another deployment (another key) may succeed.
    PROVIDER_AUTH_FAILED = "provider_auth_failed"
    UNAVAILABLE = "unavailable"
    OVERLOADED = "overloaded"
    NO_CAPACITY = "no_capacity"
    # A pool in the chain had no worker; recorded on the skipped attempt (switchyard/handoff.py).
    NO_WORKER = "no_worker"
    TIMEOUT = "timeout"


class OpenAIError(NamedTuple):
    status: int
    type: str
    code: str


class AnthropicError(NamedTuple):
    status: int
    type: str


@dataclass(frozen=True)
class CodeSpec:
    http_status: int  # on the native API
    retryable: bool  # another deployment may succeed (failover, x-should-retry, health faults)
    openai: OpenAIError
    anthropic: AnthropicError
    grpc_status: str  # a grpc.StatusCode name


def _spec(
    http: int, retryable: bool, openai: tuple[int, str, str], anthropic: tuple[int, str], grpc: str
) -> CodeSpec:
    return CodeSpec(http, retryable, OpenAIError(*openai), AnthropicError(*anthropic), grpc)


# OpenAI: budget and rate-limit denials are 429 as OpenAI's own are, with the codes SDK users
# already test for (`insufficient_quota` means "stop", `rate_limit_exceeded` "retry after a while").
# Anthropic: spend caps are 429 rate_limit_error, as Anthropic's own spend limits are; capacity
# problems are 529 overloaded_error. gRPC: after the HTTP mapping gRPC itself documents (429 and
# quota -> RESOURCE_EXHAUSTED, 502/503 -> UNAVAILABLE, 504 -> DEADLINE_EXCEEDED).
# fmt: off
CODES: dict[ErrorCode, CodeSpec] = {
    # code                          native retry  OpenAI (status, type, code)                      Anthropic (status, type)            gRPC
    ErrorCode.INVALID_REQUEST:    _spec(400, False, (400, "invalid_request_error", "invalid_request"), (400, "invalid_request_error"), "INVALID_ARGUMENT"),
    ErrorCode.UNPROCESSABLE:      _spec(422, False, (400, "invalid_request_error", "invalid_request"), (400, "invalid_request_error"), "INVALID_ARGUMENT"),
    ErrorCode.UNAUTHORIZED:       _spec(401, False, (401, "invalid_request_error", "invalid_api_key"), (401, "authentication_error"), "UNAUTHENTICATED"),
    ErrorCode.BUDGET_EXCEEDED:    _spec(402, False, (429, "insufficient_quota", "insufficient_quota"), (429, "rate_limit_error"), "RESOURCE_EXHAUSTED"),
    ErrorCode.PERMISSION_DENIED:  _spec(403, False, (403, "permission_error", "permission_denied"), (403, "permission_error"), "PERMISSION_DENIED"),
    ErrorCode.NOT_FOUND:          _spec(404, False, (404, "invalid_request_error", "not_found"), (404, "not_found_error"), "NOT_FOUND"),
    ErrorCode.MODEL_NOT_FOUND:    _spec(404, False, (404, "invalid_request_error", "model_not_found"), (404, "not_found_error"), "NOT_FOUND"),
    ErrorCode.METHOD_NOT_ALLOWED: _spec(405, False, (405, "invalid_request_error", "method_not_allowed"), (405, "invalid_request_error"), "UNIMPLEMENTED"),
    # Admin writes: already exists, or changed concurrently (ABORTED: retry the read-modify-write).
    ErrorCode.CONFLICT:           _spec(409, False, (409, "invalid_request_error", "conflict"), (409, "invalid_request_error"), "ABORTED"),
    ErrorCode.PAYLOAD_TOO_LARGE:  _spec(413, False, (413, "invalid_request_error", "payload_too_large"), (413, "request_too_large"), "RESOURCE_EXHAUSTED"),
    ErrorCode.RATE_LIMITED:       _spec(429, True, (429, "requests", "rate_limit_exceeded"), (429, "rate_limit_error"), "RESOURCE_EXHAUSTED"),
    ErrorCode.CLIENT_CLOSED:      _spec(499, False, (499, "invalid_request_error", "client_closed"), (499, "invalid_request_error"), "CANCELLED"),
    ErrorCode.INTERNAL:           _spec(500, False, (500, "server_error", "internal_error"), (500, "api_error"), "INTERNAL"),
    ErrorCode.UPSTREAM_ERROR:     _spec(502, True, (502, "server_error", "upstream_error"), (502, "api_error"), "UNAVAILABLE"),
    ErrorCode.PROVIDER_AUTH_FAILED: _spec(502, True, (502, "server_error", "provider_auth_failed"), (502, "api_error"), "UNAVAILABLE"),
    ErrorCode.UNAVAILABLE:        _spec(503, True, (503, "server_error", "unavailable"), (529, "overloaded_error"), "UNAVAILABLE"),
    ErrorCode.OVERLOADED:         _spec(503, True, (503, "server_error", "overloaded"), (529, "overloaded_error"), "UNAVAILABLE"),
    ErrorCode.NO_CAPACITY:        _spec(503, False, (503, "server_error", "no_capacity"), (529, "overloaded_error"), "UNAVAILABLE"),
    ErrorCode.NO_WORKER:          _spec(503, True, (503, "server_error", "no_worker"), (529, "overloaded_error"), "UNAVAILABLE"),
    ErrorCode.TIMEOUT:            _spec(504, True, (504, "server_error", "timeout"), (504, "timeout_error"), "DEADLINE_EXCEEDED"),
}
# fmt: on

# A code this build does not know (from a newer peer on the bus): a 500 everywhere, not retried.
UNKNOWN_CODE = _spec(500, False, (500, "server_error", ""), (500, "api_error"), "UNKNOWN")

# Derived views, for the callers that need only one column.
HTTP_STATUS: dict[str, int] = {code: spec.http_status for code, spec in CODES.items()}
RETRYABLE_CODES: frozenset[str] = frozenset(code for code, spec in CODES.items() if spec.retryable)


def spec_for(code: str) -> CodeSpec:
    """The table row of a code; UNKNOWN_CODE for a code not in it."""
    try:
        return CODES[ErrorCode(code)]
    except ValueError:
        return UNKNOWN_CODE


class GatewayError(Exception):
    """An error with a neutral code; raised anywhere, turned into an Error frame or HTTP body."""

    def __init__(
        self,
        code: ErrorCode | str,
        message: str,
        *,
        retryable: bool | None = None,
        provider_status: int = 0,
        retry_after_s: float = 0.0,
        provider: str = "",
        param: str = "",
        detail: str = "",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        # For operators only (logs, the ledger's attempt rows): the upstream's own text, hosts,
        # ports, library exceptions. Never on the wire to a client (`to_proto` leaves it out).
        self.detail = detail
        self.retryable = spec_for(code).retryable if retryable is None else retryable
        self.provider_status = provider_status
        self.retry_after_s = retry_after_s
        self.provider = provider
        self.param = param

    @property
    def http_status(self) -> int:
        return spec_for(self.code).http_status

    def to_proto(self, request_id: str = "") -> invoke_pb2.Error:
        return invoke_pb2.Error(
            code=self.code,
            message=self.message,
            retryable=self.retryable,
            provider_status=self.provider_status,
            retry_after_ms=units.ms(self.retry_after_s),
            request_id=request_id,
            provider=self.provider,
            param=self.param,
        )

    @classmethod
    def from_proto(cls, err: invoke_pb2.Error) -> GatewayError:
        return cls(
            err.code,
            err.message,
            retryable=err.retryable,
            provider_status=err.provider_status,
            retry_after_s=units.seconds(err.retry_after_ms),
            provider=err.provider,
            param=err.param,
        )
