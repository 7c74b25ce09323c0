"""The provider-neutral error: one code vocabulary, one HTTP status per code."""

from __future__ import annotations

from switchyard.v1 import invoke_pb2

# code -> HTTP status on the native API.
HTTP_STATUS: dict[str, int] = {
    "invalid_request": 400,
    "unauthorized": 401,
    "budget_exceeded": 402,
    "permission_denied": 403,
    "not_found": 404,
    "conflict": 409,
    "model_not_found": 404,
    "method_not_allowed": 405,
    "payload_too_large": 413,
    "unprocessable": 422,
    "rate_limited": 429,
    "client_closed": 499,
    "internal": 500,
    "upstream_error": 502,
    "unavailable": 503,
    "overloaded": 503,
    "no_capacity": 503,
    "timeout": 504,
}

RETRYABLE_CODES = frozenset({"rate_limited", "upstream_error", "unavailable", "overloaded", "timeout"})


class GatewayError(Exception):
    """An error with a neutral code; raised anywhere, turned into an Error frame or HTTP body."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retryable: bool | None = None,
        provider_status: int = 0,
        retry_after_s: float = 0.0,
        provider: str = "",
        param: str = "",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = code in RETRYABLE_CODES if retryable is None else retryable
        self.provider_status = provider_status
        self.retry_after_s = retry_after_s
        self.provider = provider
        self.param = param

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)

    def to_proto(self, request_id: str = "") -> invoke_pb2.Error:
        return invoke_pb2.Error(
            code=self.code,
            message=self.message,
            retryable=self.retryable,
            provider_status=self.provider_status,
            retry_after_s=self.retry_after_s,
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
            retry_after_s=err.retry_after_s,
            provider=err.provider,
            param=err.param,
        )


def http_status_for(code: str) -> int:
    return HTTP_STATUS.get(code, 500)
