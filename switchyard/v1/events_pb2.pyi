from switchyard.v1 import invoke_pb2 as _invoke_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Completion(_message.Message):
    __slots__ = ("request_id", "project_id", "agent_id", "key_id", "route", "requested_model", "provider", "model", "deployment_id", "status", "error_code", "error_message", "usage", "cost_usd", "latency_ms", "ttft_ms", "overhead_ms", "stream", "attempts", "rationale", "trace_id", "metadata", "started_unix_ms", "finished_unix_ms", "reservation_id", "api", "finish_reason", "lease_id", "lease_held_usd", "cache_hit", "cost_saved_usd", "lease_tokens")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    OVERHEAD_MS_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    RATIONALE_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    API_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_HELD_USD_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    COST_SAVED_USD_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    project_id: str
    agent_id: str
    key_id: str
    route: str
    requested_model: str
    provider: str
    model: str
    deployment_id: str
    status: _invoke_pb2.Status
    error_code: str
    error_message: str
    usage: _invoke_pb2.Usage
    cost_usd: str
    latency_ms: float
    ttft_ms: float
    overhead_ms: float
    stream: bool
    attempts: _containers.RepeatedCompositeFieldContainer[_invoke_pb2.Attempt]
    rationale: _invoke_pb2.Rationale
    trace_id: str
    metadata: _containers.ScalarMap[str, str]
    started_unix_ms: int
    finished_unix_ms: int
    reservation_id: str
    api: str
    finish_reason: _invoke_pb2.FinishReason
    lease_id: str
    lease_held_usd: str
    cache_hit: bool
    cost_saved_usd: str
    lease_tokens: int
    def __init__(self, request_id: _Optional[str] = ..., project_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., key_id: _Optional[str] = ..., route: _Optional[str] = ..., requested_model: _Optional[str] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., deployment_id: _Optional[str] = ..., status: _Optional[_Union[_invoke_pb2.Status, str]] = ..., error_code: _Optional[str] = ..., error_message: _Optional[str] = ..., usage: _Optional[_Union[_invoke_pb2.Usage, _Mapping]] = ..., cost_usd: _Optional[str] = ..., latency_ms: _Optional[float] = ..., ttft_ms: _Optional[float] = ..., overhead_ms: _Optional[float] = ..., stream: _Optional[bool] = ..., attempts: _Optional[_Iterable[_Union[_invoke_pb2.Attempt, _Mapping]]] = ..., rationale: _Optional[_Union[_invoke_pb2.Rationale, _Mapping]] = ..., trace_id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., started_unix_ms: _Optional[int] = ..., finished_unix_ms: _Optional[int] = ..., reservation_id: _Optional[str] = ..., api: _Optional[str] = ..., finish_reason: _Optional[_Union[_invoke_pb2.FinishReason, str]] = ..., lease_id: _Optional[str] = ..., lease_held_usd: _Optional[str] = ..., cache_hit: _Optional[bool] = ..., cost_saved_usd: _Optional[str] = ..., lease_tokens: _Optional[int] = ...) -> None: ...

class ProviderStat(_message.Message):
    __slots__ = ("deployment_id", "latency_ms", "ttft_ms", "ok", "http_status", "retry_after_ms", "stream", "ts_unix_ms", "error_code", "request_id", "rate_limits")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    TS_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMITS_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    latency_ms: float
    ttft_ms: float
    ok: bool
    http_status: int
    retry_after_ms: float
    stream: bool
    ts_unix_ms: int
    error_code: str
    request_id: str
    rate_limits: ProviderRateLimits
    def __init__(self, deployment_id: _Optional[str] = ..., latency_ms: _Optional[float] = ..., ttft_ms: _Optional[float] = ..., ok: _Optional[bool] = ..., http_status: _Optional[int] = ..., retry_after_ms: _Optional[float] = ..., stream: _Optional[bool] = ..., ts_unix_ms: _Optional[int] = ..., error_code: _Optional[str] = ..., request_id: _Optional[str] = ..., rate_limits: _Optional[_Union[ProviderRateLimits, _Mapping]] = ...) -> None: ...

class ProviderStatBatch(_message.Message):
    __slots__ = ("stats",)
    STATS_FIELD_NUMBER: _ClassVar[int]
    stats: _containers.RepeatedCompositeFieldContainer[ProviderStat]
    def __init__(self, stats: _Optional[_Iterable[_Union[ProviderStat, _Mapping]]] = ...) -> None: ...

class ProviderRateLimits(_message.Message):
    __slots__ = ("requests_limit", "requests_remaining", "requests_reset_ms", "tokens_limit", "tokens_remaining", "tokens_reset_ms", "input_tokens_remaining", "input_tokens_reset_ms", "output_tokens_remaining", "output_tokens_reset_ms")
    REQUESTS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_REMAINING_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_RESET_MS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_REMAINING_FIELD_NUMBER: _ClassVar[int]
    TOKENS_RESET_MS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_REMAINING_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_RESET_MS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_REMAINING_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_RESET_MS_FIELD_NUMBER: _ClassVar[int]
    requests_limit: int
    requests_remaining: int
    requests_reset_ms: float
    tokens_limit: int
    tokens_remaining: int
    tokens_reset_ms: float
    input_tokens_remaining: int
    input_tokens_reset_ms: float
    output_tokens_remaining: int
    output_tokens_reset_ms: float
    def __init__(self, requests_limit: _Optional[int] = ..., requests_remaining: _Optional[int] = ..., requests_reset_ms: _Optional[float] = ..., tokens_limit: _Optional[int] = ..., tokens_remaining: _Optional[int] = ..., tokens_reset_ms: _Optional[float] = ..., input_tokens_remaining: _Optional[int] = ..., input_tokens_reset_ms: _Optional[float] = ..., output_tokens_remaining: _Optional[int] = ..., output_tokens_reset_ms: _Optional[float] = ...) -> None: ...

class BudgetAlert(_message.Message):
    __slots__ = ("scope_kind", "scope_id", "period", "period_start", "threshold_pct", "spent_usd", "cap_usd", "ts_unix_ms", "project_id", "kind", "reserved_usd", "refused_usd", "refused_count", "window_ms", "rate_usd_per_hour", "projected_unix_ms", "long_window_ms", "long_rate_usd_per_hour", "period_end_unix_ms", "message")
    SCOPE_KIND_FIELD_NUMBER: _ClassVar[int]
    SCOPE_ID_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    PERIOD_START_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_PCT_FIELD_NUMBER: _ClassVar[int]
    SPENT_USD_FIELD_NUMBER: _ClassVar[int]
    CAP_USD_FIELD_NUMBER: _ClassVar[int]
    TS_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    RESERVED_USD_FIELD_NUMBER: _ClassVar[int]
    REFUSED_USD_FIELD_NUMBER: _ClassVar[int]
    REFUSED_COUNT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_MS_FIELD_NUMBER: _ClassVar[int]
    RATE_USD_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    PROJECTED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    LONG_WINDOW_MS_FIELD_NUMBER: _ClassVar[int]
    LONG_RATE_USD_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    PERIOD_END_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    scope_kind: str
    scope_id: str
    period: str
    period_start: str
    threshold_pct: int
    spent_usd: str
    cap_usd: str
    ts_unix_ms: int
    project_id: str
    kind: str
    reserved_usd: str
    refused_usd: str
    refused_count: int
    window_ms: int
    rate_usd_per_hour: str
    projected_unix_ms: int
    long_window_ms: int
    long_rate_usd_per_hour: str
    period_end_unix_ms: int
    message: str
    def __init__(self, scope_kind: _Optional[str] = ..., scope_id: _Optional[str] = ..., period: _Optional[str] = ..., period_start: _Optional[str] = ..., threshold_pct: _Optional[int] = ..., spent_usd: _Optional[str] = ..., cap_usd: _Optional[str] = ..., ts_unix_ms: _Optional[int] = ..., project_id: _Optional[str] = ..., kind: _Optional[str] = ..., reserved_usd: _Optional[str] = ..., refused_usd: _Optional[str] = ..., refused_count: _Optional[int] = ..., window_ms: _Optional[int] = ..., rate_usd_per_hour: _Optional[str] = ..., projected_unix_ms: _Optional[int] = ..., long_window_ms: _Optional[int] = ..., long_rate_usd_per_hour: _Optional[str] = ..., period_end_unix_ms: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...
