from switchyard.v1 import invoke_pb2 as _invoke_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LedgerError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class RequestLookup(_message.Message):
    __slots__ = ("request_id", "project_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    project_id: str
    def __init__(self, request_id: _Optional[str] = ..., project_id: _Optional[str] = ...) -> None: ...

class RequestLookupReply(_message.Message):
    __slots__ = ("error", "found", "request")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    error: LedgerError
    found: bool
    request: LedgerRequest
    def __init__(self, error: _Optional[_Union[LedgerError, _Mapping]] = ..., found: _Optional[bool] = ..., request: _Optional[_Union[LedgerRequest, _Mapping]] = ...) -> None: ...

class LedgerRequest(_message.Message):
    __slots__ = ("request_id", "ts_unix_ms", "finished_unix_ms", "project_id", "agent_id", "key_id", "api", "route", "requested_model", "planned_provider", "planned_model", "planned_deployment_id", "provider", "model", "deployment_id", "status", "error_code", "error_message", "finish_reason", "prompt_tokens", "completion_tokens", "cached_tokens", "cost_usd", "latency_ms", "ttft_ms", "overhead_ms", "stream", "attempt_count", "failovers", "attempts", "rationale", "trace_id", "metadata", "reservation_id", "inserted_unix_ms", "cache_write_tokens", "cache_write_1h_tokens", "reasoning_tokens", "cache_hit", "cost_saved_usd")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TS_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    API_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_MODEL_FIELD_NUMBER: _ClassVar[int]
    PLANNED_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PLANNED_MODEL_FIELD_NUMBER: _ClassVar[int]
    PLANNED_DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    OVERHEAD_MS_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_COUNT_FIELD_NUMBER: _ClassVar[int]
    FAILOVERS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    RATIONALE_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    INSERTED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_1H_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REASONING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    COST_SAVED_USD_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    ts_unix_ms: int
    finished_unix_ms: int
    project_id: str
    agent_id: str
    key_id: str
    api: str
    route: str
    requested_model: str
    planned_provider: str
    planned_model: str
    planned_deployment_id: str
    provider: str
    model: str
    deployment_id: str
    status: _invoke_pb2.Status
    error_code: str
    error_message: str
    finish_reason: _invoke_pb2.FinishReason
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: str
    latency_ms: float
    ttft_ms: float
    overhead_ms: float
    stream: bool
    attempt_count: int
    failovers: int
    attempts: _containers.RepeatedCompositeFieldContainer[_invoke_pb2.Attempt]
    rationale: _invoke_pb2.Rationale
    trace_id: str
    metadata: _containers.ScalarMap[str, str]
    reservation_id: str
    inserted_unix_ms: int
    cache_write_tokens: int
    cache_write_1h_tokens: int
    reasoning_tokens: int
    cache_hit: bool
    cost_saved_usd: str
    def __init__(self, request_id: _Optional[str] = ..., ts_unix_ms: _Optional[int] = ..., finished_unix_ms: _Optional[int] = ..., project_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., key_id: _Optional[str] = ..., api: _Optional[str] = ..., route: _Optional[str] = ..., requested_model: _Optional[str] = ..., planned_provider: _Optional[str] = ..., planned_model: _Optional[str] = ..., planned_deployment_id: _Optional[str] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., deployment_id: _Optional[str] = ..., status: _Optional[_Union[_invoke_pb2.Status, str]] = ..., error_code: _Optional[str] = ..., error_message: _Optional[str] = ..., finish_reason: _Optional[_Union[_invoke_pb2.FinishReason, str]] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., cached_tokens: _Optional[int] = ..., cost_usd: _Optional[str] = ..., latency_ms: _Optional[float] = ..., ttft_ms: _Optional[float] = ..., overhead_ms: _Optional[float] = ..., stream: _Optional[bool] = ..., attempt_count: _Optional[int] = ..., failovers: _Optional[int] = ..., attempts: _Optional[_Iterable[_Union[_invoke_pb2.Attempt, _Mapping]]] = ..., rationale: _Optional[_Union[_invoke_pb2.Rationale, _Mapping]] = ..., trace_id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., reservation_id: _Optional[str] = ..., inserted_unix_ms: _Optional[int] = ..., cache_write_tokens: _Optional[int] = ..., cache_write_1h_tokens: _Optional[int] = ..., reasoning_tokens: _Optional[int] = ..., cache_hit: _Optional[bool] = ..., cost_saved_usd: _Optional[str] = ...) -> None: ...

class SpendSnapshotQuery(_message.Message):
    __slots__ = ("tail_request_ids", "day_start_unix_ms", "month_start_unix_ms", "recent_since_unix_ms", "journal_request_ids")
    TAIL_REQUEST_IDS_FIELD_NUMBER: _ClassVar[int]
    DAY_START_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    MONTH_START_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    RECENT_SINCE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    JOURNAL_REQUEST_IDS_FIELD_NUMBER: _ClassVar[int]
    tail_request_ids: _containers.RepeatedScalarFieldContainer[str]
    day_start_unix_ms: int
    month_start_unix_ms: int
    recent_since_unix_ms: int
    journal_request_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tail_request_ids: _Optional[_Iterable[str]] = ..., day_start_unix_ms: _Optional[int] = ..., month_start_unix_ms: _Optional[int] = ..., recent_since_unix_ms: _Optional[int] = ..., journal_request_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ScopeSpend(_message.Message):
    __slots__ = ("project_id", "agent_id", "key_id", "total_usd", "month_usd", "day_usd", "recent_request_ids")
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_USD_FIELD_NUMBER: _ClassVar[int]
    MONTH_USD_FIELD_NUMBER: _ClassVar[int]
    DAY_USD_FIELD_NUMBER: _ClassVar[int]
    RECENT_REQUEST_IDS_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    agent_id: str
    key_id: str
    total_usd: str
    month_usd: str
    day_usd: str
    recent_request_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, project_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., key_id: _Optional[str] = ..., total_usd: _Optional[str] = ..., month_usd: _Optional[str] = ..., day_usd: _Optional[str] = ..., recent_request_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class SpendSnapshot(_message.Message):
    __slots__ = ("error", "scopes", "stored_journal_ids")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    STORED_JOURNAL_IDS_FIELD_NUMBER: _ClassVar[int]
    error: LedgerError
    scopes: _containers.RepeatedCompositeFieldContainer[ScopeSpend]
    stored_journal_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, error: _Optional[_Union[LedgerError, _Mapping]] = ..., scopes: _Optional[_Iterable[_Union[ScopeSpend, _Mapping]]] = ..., stored_journal_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class UsageQuery(_message.Message):
    __slots__ = ("project_id", "day_start_unix_ms", "month_start_unix_ms", "short_since_unix_ms", "long_since_unix_ms", "since_unix_ms")
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    DAY_START_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    MONTH_START_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    SHORT_SINCE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    LONG_SINCE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    SINCE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    day_start_unix_ms: int
    month_start_unix_ms: int
    short_since_unix_ms: int
    long_since_unix_ms: int
    since_unix_ms: int
    def __init__(self, project_id: _Optional[str] = ..., day_start_unix_ms: _Optional[int] = ..., month_start_unix_ms: _Optional[int] = ..., short_since_unix_ms: _Optional[int] = ..., long_since_unix_ms: _Optional[int] = ..., since_unix_ms: _Optional[int] = ...) -> None: ...

class ScopeUsage(_message.Message):
    __slots__ = ("agent_id", "key_id", "day_usd", "month_usd", "total_usd", "short_usd", "long_usd")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    DAY_USD_FIELD_NUMBER: _ClassVar[int]
    MONTH_USD_FIELD_NUMBER: _ClassVar[int]
    TOTAL_USD_FIELD_NUMBER: _ClassVar[int]
    SHORT_USD_FIELD_NUMBER: _ClassVar[int]
    LONG_USD_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    key_id: str
    day_usd: str
    month_usd: str
    total_usd: str
    short_usd: str
    long_usd: str
    def __init__(self, agent_id: _Optional[str] = ..., key_id: _Optional[str] = ..., day_usd: _Optional[str] = ..., month_usd: _Optional[str] = ..., total_usd: _Optional[str] = ..., short_usd: _Optional[str] = ..., long_usd: _Optional[str] = ...) -> None: ...

class AgentUsage(_message.Message):
    __slots__ = ("agent", "run_id", "requests", "prompt_tokens", "completion_tokens", "cost_usd", "first_unix_ms", "last_unix_ms")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    FIRST_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    agent: str
    run_id: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: str
    first_unix_ms: int
    last_unix_ms: int
    def __init__(self, agent: _Optional[str] = ..., run_id: _Optional[str] = ..., requests: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., cost_usd: _Optional[str] = ..., first_unix_ms: _Optional[int] = ..., last_unix_ms: _Optional[int] = ...) -> None: ...

class UsageReply(_message.Message):
    __slots__ = ("error", "scopes", "agents")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    error: LedgerError
    scopes: _containers.RepeatedCompositeFieldContainer[ScopeUsage]
    agents: _containers.RepeatedCompositeFieldContainer[AgentUsage]
    def __init__(self, error: _Optional[_Union[LedgerError, _Mapping]] = ..., scopes: _Optional[_Iterable[_Union[ScopeUsage, _Mapping]]] = ..., agents: _Optional[_Iterable[_Union[AgentUsage, _Mapping]]] = ...) -> None: ...
