from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_SYSTEM: _ClassVar[Role]
    ROLE_USER: _ClassVar[Role]
    ROLE_ASSISTANT: _ClassVar[Role]
    ROLE_TOOL: _ClassVar[Role]

class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATUS_UNSPECIFIED: _ClassVar[Status]
    STATUS_OK: _ClassVar[Status]
    STATUS_ERROR: _ClassVar[Status]
    STATUS_CANCELLED: _ClassVar[Status]
    STATUS_REJECTED: _ClassVar[Status]

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_REASON_UNSPECIFIED: _ClassVar[FinishReason]
    FINISH_REASON_STOP: _ClassVar[FinishReason]
    FINISH_REASON_LENGTH: _ClassVar[FinishReason]
    FINISH_REASON_TOOL_CALLS: _ClassVar[FinishReason]
    FINISH_REASON_CONTENT_FILTER: _ClassVar[FinishReason]
    FINISH_REASON_ERROR: _ClassVar[FinishReason]
ROLE_UNSPECIFIED: Role
ROLE_SYSTEM: Role
ROLE_USER: Role
ROLE_ASSISTANT: Role
ROLE_TOOL: Role
STATUS_UNSPECIFIED: Status
STATUS_OK: Status
STATUS_ERROR: Status
STATUS_CANCELLED: Status
STATUS_REJECTED: Status
FINISH_REASON_UNSPECIFIED: FinishReason
FINISH_REASON_STOP: FinishReason
FINISH_REASON_LENGTH: FinishReason
FINISH_REASON_TOOL_CALLS: FinishReason
FINISH_REASON_CONTENT_FILTER: FinishReason
FINISH_REASON_ERROR: FinishReason

class ImagePart(_message.Message):
    __slots__ = ("url", "media_type", "data", "detail")
    URL_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    url: str
    media_type: str
    data: bytes
    detail: str
    def __init__(self, url: _Optional[str] = ..., media_type: _Optional[str] = ..., data: _Optional[bytes] = ..., detail: _Optional[str] = ...) -> None: ...

class CacheControl(_message.Message):
    __slots__ = ("type", "ttl")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    type: str
    ttl: str
    def __init__(self, type: _Optional[str] = ..., ttl: _Optional[str] = ...) -> None: ...

class ContentPart(_message.Message):
    __slots__ = ("text", "image", "cache_control")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    CACHE_CONTROL_FIELD_NUMBER: _ClassVar[int]
    text: str
    image: ImagePart
    cache_control: CacheControl
    def __init__(self, text: _Optional[str] = ..., image: _Optional[_Union[ImagePart, _Mapping]] = ..., cache_control: _Optional[_Union[CacheControl, _Mapping]] = ...) -> None: ...

class ToolCall(_message.Message):
    __slots__ = ("id", "name", "arguments_json", "cache_control")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    CACHE_CONTROL_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    arguments_json: str
    cache_control: CacheControl
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., arguments_json: _Optional[str] = ..., cache_control: _Optional[_Union[CacheControl, _Mapping]] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("role", "content", "tool_calls", "tool_call_id", "name")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    role: Role
    content: _containers.RepeatedCompositeFieldContainer[ContentPart]
    tool_calls: _containers.RepeatedCompositeFieldContainer[ToolCall]
    tool_call_id: str
    name: str
    def __init__(self, role: _Optional[_Union[Role, str]] = ..., content: _Optional[_Iterable[_Union[ContentPart, _Mapping]]] = ..., tool_calls: _Optional[_Iterable[_Union[ToolCall, _Mapping]]] = ..., tool_call_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class Tool(_message.Message):
    __slots__ = ("name", "description", "parameters_json", "cache_control")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_JSON_FIELD_NUMBER: _ClassVar[int]
    CACHE_CONTROL_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    parameters_json: str
    cache_control: CacheControl
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., parameters_json: _Optional[str] = ..., cache_control: _Optional[_Union[CacheControl, _Mapping]] = ...) -> None: ...

class ToolChoice(_message.Message):
    __slots__ = ("mode", "name")
    class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        MODE_UNSPECIFIED: _ClassVar[ToolChoice.Mode]
        MODE_AUTO: _ClassVar[ToolChoice.Mode]
        MODE_NONE: _ClassVar[ToolChoice.Mode]
        MODE_REQUIRED: _ClassVar[ToolChoice.Mode]
        MODE_TOOL: _ClassVar[ToolChoice.Mode]
    MODE_UNSPECIFIED: ToolChoice.Mode
    MODE_AUTO: ToolChoice.Mode
    MODE_NONE: ToolChoice.Mode
    MODE_REQUIRED: ToolChoice.Mode
    MODE_TOOL: ToolChoice.Mode
    MODE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    mode: ToolChoice.Mode
    name: str
    def __init__(self, mode: _Optional[_Union[ToolChoice.Mode, str]] = ..., name: _Optional[str] = ...) -> None: ...

class ResponseFormat(_message.Message):
    __slots__ = ("type", "name", "description", "schema_json", "strict")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        TYPE_UNSPECIFIED: _ClassVar[ResponseFormat.Type]
        TYPE_TEXT: _ClassVar[ResponseFormat.Type]
        TYPE_JSON_OBJECT: _ClassVar[ResponseFormat.Type]
        TYPE_JSON_SCHEMA: _ClassVar[ResponseFormat.Type]
    TYPE_UNSPECIFIED: ResponseFormat.Type
    TYPE_TEXT: ResponseFormat.Type
    TYPE_JSON_OBJECT: ResponseFormat.Type
    TYPE_JSON_SCHEMA: ResponseFormat.Type
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_JSON_FIELD_NUMBER: _ClassVar[int]
    STRICT_FIELD_NUMBER: _ClassVar[int]
    type: ResponseFormat.Type
    name: str
    description: str
    schema_json: str
    strict: bool
    def __init__(self, type: _Optional[_Union[ResponseFormat.Type, str]] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., schema_json: _Optional[str] = ..., strict: _Optional[bool] = ...) -> None: ...

class Strategy(_message.Message):
    __slots__ = ("preset", "explicit", "latency", "cost", "quality")
    PRESET_FIELD_NUMBER: _ClassVar[int]
    EXPLICIT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    preset: str
    explicit: bool
    latency: float
    cost: float
    quality: float
    def __init__(self, preset: _Optional[str] = ..., explicit: _Optional[bool] = ..., latency: _Optional[float] = ..., cost: _Optional[float] = ..., quality: _Optional[float] = ...) -> None: ...

class InvokeRequest(_message.Message):
    __slots__ = ("request_id", "model", "messages", "tools", "temperature", "top_p", "stop", "max_tokens", "stream", "strategy", "metadata", "project_id", "agent_id", "key_id", "deadline_unix_ms", "api", "seed", "tool_choice", "response_format", "received_unix_ms", "hedge", "kind", "embedding", "reasoning", "responses_json", "cache")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[InvokeRequest.Kind]
        KIND_CHAT: _ClassVar[InvokeRequest.Kind]
        KIND_EMBEDDING: _ClassVar[InvokeRequest.Kind]
        KIND_COUNT_TOKENS: _ClassVar[InvokeRequest.Kind]
    KIND_UNSPECIFIED: InvokeRequest.Kind
    KIND_CHAT: InvokeRequest.Kind
    KIND_EMBEDDING: InvokeRequest.Kind
    KIND_COUNT_TOKENS: InvokeRequest.Kind
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    API_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TOOL_CHOICE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    HEDGE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    RESPONSES_JSON_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model: str
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    tools: _containers.RepeatedCompositeFieldContainer[Tool]
    temperature: float
    top_p: float
    stop: _containers.RepeatedScalarFieldContainer[str]
    max_tokens: int
    stream: bool
    strategy: Strategy
    metadata: _containers.ScalarMap[str, str]
    project_id: str
    agent_id: str
    key_id: str
    deadline_unix_ms: int
    api: str
    seed: int
    tool_choice: ToolChoice
    response_format: ResponseFormat
    received_unix_ms: float
    hedge: HedgeChoice
    kind: InvokeRequest.Kind
    embedding: EmbeddingInput
    reasoning: Reasoning
    responses_json: str
    cache: CacheChoice
    def __init__(self, request_id: _Optional[str] = ..., model: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., tools: _Optional[_Iterable[_Union[Tool, _Mapping]]] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., stop: _Optional[_Iterable[str]] = ..., max_tokens: _Optional[int] = ..., stream: _Optional[bool] = ..., strategy: _Optional[_Union[Strategy, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., project_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., key_id: _Optional[str] = ..., deadline_unix_ms: _Optional[int] = ..., api: _Optional[str] = ..., seed: _Optional[int] = ..., tool_choice: _Optional[_Union[ToolChoice, _Mapping]] = ..., response_format: _Optional[_Union[ResponseFormat, _Mapping]] = ..., received_unix_ms: _Optional[float] = ..., hedge: _Optional[_Union[HedgeChoice, _Mapping]] = ..., kind: _Optional[_Union[InvokeRequest.Kind, str]] = ..., embedding: _Optional[_Union[EmbeddingInput, _Mapping]] = ..., reasoning: _Optional[_Union[Reasoning, _Mapping]] = ..., responses_json: _Optional[str] = ..., cache: _Optional[_Union[CacheChoice, _Mapping]] = ...) -> None: ...

class CacheChoice(_message.Message):
    __slots__ = ("no_store", "no_cache", "ttl_ms", "off")
    NO_STORE_FIELD_NUMBER: _ClassVar[int]
    NO_CACHE_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    OFF_FIELD_NUMBER: _ClassVar[int]
    no_store: bool
    no_cache: bool
    ttl_ms: float
    off: bool
    def __init__(self, no_store: _Optional[bool] = ..., no_cache: _Optional[bool] = ..., ttl_ms: _Optional[float] = ..., off: _Optional[bool] = ...) -> None: ...

class CachedAnswer(_message.Message):
    __slots__ = ("response", "stored_unix_ms", "expires_unix_ms", "project_id")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    STORED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    response: InvokeResponse
    stored_unix_ms: float
    expires_unix_ms: float
    project_id: str
    def __init__(self, response: _Optional[_Union[InvokeResponse, _Mapping]] = ..., stored_unix_ms: _Optional[float] = ..., expires_unix_ms: _Optional[float] = ..., project_id: _Optional[str] = ...) -> None: ...

class Reasoning(_message.Message):
    __slots__ = ("effort", "budget_tokens")
    class Effort(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        EFFORT_UNSPECIFIED: _ClassVar[Reasoning.Effort]
        EFFORT_NONE: _ClassVar[Reasoning.Effort]
        EFFORT_MINIMAL: _ClassVar[Reasoning.Effort]
        EFFORT_LOW: _ClassVar[Reasoning.Effort]
        EFFORT_MEDIUM: _ClassVar[Reasoning.Effort]
        EFFORT_HIGH: _ClassVar[Reasoning.Effort]
        EFFORT_XHIGH: _ClassVar[Reasoning.Effort]
    EFFORT_UNSPECIFIED: Reasoning.Effort
    EFFORT_NONE: Reasoning.Effort
    EFFORT_MINIMAL: Reasoning.Effort
    EFFORT_LOW: Reasoning.Effort
    EFFORT_MEDIUM: Reasoning.Effort
    EFFORT_HIGH: Reasoning.Effort
    EFFORT_XHIGH: Reasoning.Effort
    EFFORT_FIELD_NUMBER: _ClassVar[int]
    BUDGET_TOKENS_FIELD_NUMBER: _ClassVar[int]
    effort: Reasoning.Effort
    budget_tokens: int
    def __init__(self, effort: _Optional[_Union[Reasoning.Effort, str]] = ..., budget_tokens: _Optional[int] = ...) -> None: ...

class HedgeChoice(_message.Message):
    __slots__ = ("off", "delay_ms")
    OFF_FIELD_NUMBER: _ClassVar[int]
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    off: bool
    delay_ms: float
    def __init__(self, off: _Optional[bool] = ..., delay_ms: _Optional[float] = ...) -> None: ...

class EmbeddingInput(_message.Message):
    __slots__ = ("inputs", "dimensions", "user", "encoding_format")
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FORMAT_FIELD_NUMBER: _ClassVar[int]
    inputs: _containers.RepeatedScalarFieldContainer[str]
    dimensions: int
    user: str
    encoding_format: str
    def __init__(self, inputs: _Optional[_Iterable[str]] = ..., dimensions: _Optional[int] = ..., user: _Optional[str] = ..., encoding_format: _Optional[str] = ...) -> None: ...

class Embedding(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("seq", "delta_text", "tool_calls")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    DELTA_TEXT_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    delta_text: str
    tool_calls: _containers.RepeatedCompositeFieldContainer[ToolCallDelta]
    def __init__(self, seq: _Optional[int] = ..., delta_text: _Optional[str] = ..., tool_calls: _Optional[_Iterable[_Union[ToolCallDelta, _Mapping]]] = ...) -> None: ...

class ToolCallDelta(_message.Message):
    __slots__ = ("index", "id", "name", "arguments_delta")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_DELTA_FIELD_NUMBER: _ClassVar[int]
    index: int
    id: str
    name: str
    arguments_delta: str
    def __init__(self, index: _Optional[int] = ..., id: _Optional[str] = ..., name: _Optional[str] = ..., arguments_delta: _Optional[str] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens", "cache_write_1h_tokens", "reasoning_tokens")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_1H_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REASONING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    cache_write_1h_tokens: int
    reasoning_tokens: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., cached_tokens: _Optional[int] = ..., cache_write_tokens: _Optional[int] = ..., cache_write_1h_tokens: _Optional[int] = ..., reasoning_tokens: _Optional[int] = ...) -> None: ...

class Attempt(_message.Message):
    __slots__ = ("deployment_id", "provider", "model", "status", "error_code", "http_status", "latency_ms", "ttft_ms", "error_message", "started_unix_ms", "hedge", "cost_usd", "usage")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    HEDGE_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    provider: str
    model: str
    status: Status
    error_code: str
    http_status: int
    latency_ms: float
    ttft_ms: float
    error_message: str
    started_unix_ms: float
    hedge: bool
    cost_usd: str
    usage: Usage
    def __init__(self, deployment_id: _Optional[str] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., status: _Optional[_Union[Status, str]] = ..., error_code: _Optional[str] = ..., http_status: _Optional[int] = ..., latency_ms: _Optional[float] = ..., ttft_ms: _Optional[float] = ..., error_message: _Optional[str] = ..., started_unix_ms: _Optional[float] = ..., hedge: _Optional[bool] = ..., cost_usd: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...

class CandidateScore(_message.Message):
    __slots__ = ("deployment_id", "provider", "model", "latency_ms", "est_cost_usd", "quality", "latency_score", "cost_score", "quality_score", "total", "eligible", "excluded_reason", "error_rate", "inflight", "breaker", "latency_source", "quota_headroom", "quota_wait_ms")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    EST_COST_USD_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    LATENCY_SCORE_FIELD_NUMBER: _ClassVar[int]
    COST_SCORE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_SCORE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    ELIGIBLE_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    INFLIGHT_FIELD_NUMBER: _ClassVar[int]
    BREAKER_FIELD_NUMBER: _ClassVar[int]
    LATENCY_SOURCE_FIELD_NUMBER: _ClassVar[int]
    QUOTA_HEADROOM_FIELD_NUMBER: _ClassVar[int]
    QUOTA_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    provider: str
    model: str
    latency_ms: float
    est_cost_usd: float
    quality: float
    latency_score: float
    cost_score: float
    quality_score: float
    total: float
    eligible: bool
    excluded_reason: str
    error_rate: float
    inflight: int
    breaker: str
    latency_source: str
    quota_headroom: float
    quota_wait_ms: float
    def __init__(self, deployment_id: _Optional[str] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., latency_ms: _Optional[float] = ..., est_cost_usd: _Optional[float] = ..., quality: _Optional[float] = ..., latency_score: _Optional[float] = ..., cost_score: _Optional[float] = ..., quality_score: _Optional[float] = ..., total: _Optional[float] = ..., eligible: _Optional[bool] = ..., excluded_reason: _Optional[str] = ..., error_rate: _Optional[float] = ..., inflight: _Optional[int] = ..., breaker: _Optional[str] = ..., latency_source: _Optional[str] = ..., quota_headroom: _Optional[float] = ..., quota_wait_ms: _Optional[float] = ...) -> None: ...

class Rationale(_message.Message):
    __slots__ = ("route", "rule", "strategy", "weight_latency", "weight_cost", "weight_quality", "candidates", "winner", "reason", "decision_ms", "chain", "decided_by", "prompt_tokens_est", "expected_output_tokens", "hedge", "downgrade", "undowngraded_winner", "undowngraded_est_cost_usd")
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_LATENCY_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_COST_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_QUALITY_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    WINNER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DECISION_MS_FIELD_NUMBER: _ClassVar[int]
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    DECIDED_BY_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_EST_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    HEDGE_FIELD_NUMBER: _ClassVar[int]
    DOWNGRADE_FIELD_NUMBER: _ClassVar[int]
    UNDOWNGRADED_WINNER_FIELD_NUMBER: _ClassVar[int]
    UNDOWNGRADED_EST_COST_USD_FIELD_NUMBER: _ClassVar[int]
    route: str
    rule: str
    strategy: str
    weight_latency: float
    weight_cost: float
    weight_quality: float
    candidates: _containers.RepeatedCompositeFieldContainer[CandidateScore]
    winner: str
    reason: str
    decision_ms: float
    chain: _containers.RepeatedScalarFieldContainer[str]
    decided_by: str
    prompt_tokens_est: int
    expected_output_tokens: int
    hedge: HedgeNote
    downgrade: str
    undowngraded_winner: str
    undowngraded_est_cost_usd: float
    def __init__(self, route: _Optional[str] = ..., rule: _Optional[str] = ..., strategy: _Optional[str] = ..., weight_latency: _Optional[float] = ..., weight_cost: _Optional[float] = ..., weight_quality: _Optional[float] = ..., candidates: _Optional[_Iterable[_Union[CandidateScore, _Mapping]]] = ..., winner: _Optional[str] = ..., reason: _Optional[str] = ..., decision_ms: _Optional[float] = ..., chain: _Optional[_Iterable[str]] = ..., decided_by: _Optional[str] = ..., prompt_tokens_est: _Optional[int] = ..., expected_output_tokens: _Optional[int] = ..., hedge: _Optional[_Union[HedgeNote, _Mapping]] = ..., downgrade: _Optional[str] = ..., undowngraded_winner: _Optional[str] = ..., undowngraded_est_cost_usd: _Optional[float] = ...) -> None: ...

class HedgeNote(_message.Message):
    __slots__ = ("armed", "delay_ms", "delay_source", "skipped", "fired", "fired_after_ms", "target", "winner", "hedge_won")
    ARMED_FIELD_NUMBER: _ClassVar[int]
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    DELAY_SOURCE_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    FIRED_FIELD_NUMBER: _ClassVar[int]
    FIRED_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    WINNER_FIELD_NUMBER: _ClassVar[int]
    HEDGE_WON_FIELD_NUMBER: _ClassVar[int]
    armed: bool
    delay_ms: float
    delay_source: str
    skipped: str
    fired: bool
    fired_after_ms: float
    target: str
    winner: str
    hedge_won: bool
    def __init__(self, armed: _Optional[bool] = ..., delay_ms: _Optional[float] = ..., delay_source: _Optional[str] = ..., skipped: _Optional[str] = ..., fired: _Optional[bool] = ..., fired_after_ms: _Optional[float] = ..., target: _Optional[str] = ..., winner: _Optional[str] = ..., hedge_won: _Optional[bool] = ...) -> None: ...

class InvokeResponse(_message.Message):
    __slots__ = ("request_id", "provider", "model", "deployment_id", "message", "finish_reason", "usage", "cost_usd", "latency_ms", "ttft_ms", "attempts", "rationale", "route", "embeddings", "usage_estimated", "cache_hit")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    RATIONALE_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    USAGE_ESTIMATED_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    provider: str
    model: str
    deployment_id: str
    message: Message
    finish_reason: FinishReason
    usage: Usage
    cost_usd: str
    latency_ms: float
    ttft_ms: float
    attempts: _containers.RepeatedCompositeFieldContainer[Attempt]
    rationale: Rationale
    route: str
    embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    usage_estimated: bool
    cache_hit: bool
    def __init__(self, request_id: _Optional[str] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., deployment_id: _Optional[str] = ..., message: _Optional[_Union[Message, _Mapping]] = ..., finish_reason: _Optional[_Union[FinishReason, str]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., cost_usd: _Optional[str] = ..., latency_ms: _Optional[float] = ..., ttft_ms: _Optional[float] = ..., attempts: _Optional[_Iterable[_Union[Attempt, _Mapping]]] = ..., rationale: _Optional[_Union[Rationale, _Mapping]] = ..., route: _Optional[str] = ..., embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ..., usage_estimated: _Optional[bool] = ..., cache_hit: _Optional[bool] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message", "retryable", "provider_status", "retry_after_ms", "request_id", "provider", "param")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_STATUS_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PARAM_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    retryable: bool
    provider_status: int
    retry_after_ms: float
    request_id: str
    provider: str
    param: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., retryable: _Optional[bool] = ..., provider_status: _Optional[int] = ..., retry_after_ms: _Optional[float] = ..., request_id: _Optional[str] = ..., provider: _Optional[str] = ..., param: _Optional[str] = ...) -> None: ...

class Reply(_message.Message):
    __slots__ = ("chunk", "final", "error", "chunks")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    chunk: Chunk
    final: InvokeResponse
    error: Error
    chunks: ChunkBatch
    def __init__(self, chunk: _Optional[_Union[Chunk, _Mapping]] = ..., final: _Optional[_Union[InvokeResponse, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., chunks: _Optional[_Union[ChunkBatch, _Mapping]] = ...) -> None: ...

class ChunkBatch(_message.Message):
    __slots__ = ("chunks",)
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    chunks: _containers.RepeatedCompositeFieldContainer[Chunk]
    def __init__(self, chunks: _Optional[_Iterable[_Union[Chunk, _Mapping]]] = ...) -> None: ...

class Target(_message.Message):
    __slots__ = ("deployment_id", "provider", "model")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    provider: str
    model: str
    def __init__(self, deployment_id: _Optional[str] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class Dispatch(_message.Message):
    __slots__ = ("request", "chain", "position", "rationale", "attempts", "reservation_id", "route", "router_ms", "reply_to", "max_attempts", "routed_unix_ms", "reserved_usd", "hedge", "hedge_for", "cache_key", "cache_ttl_ms", "lease_id", "lease_held_usd", "lease_tokens")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    RATIONALE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    ROUTER_MS_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ROUTED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    RESERVED_USD_FIELD_NUMBER: _ClassVar[int]
    HEDGE_FIELD_NUMBER: _ClassVar[int]
    HEDGE_FOR_FIELD_NUMBER: _ClassVar[int]
    CACHE_KEY_FIELD_NUMBER: _ClassVar[int]
    CACHE_TTL_MS_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_HELD_USD_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    request: InvokeRequest
    chain: _containers.RepeatedCompositeFieldContainer[Target]
    position: int
    rationale: Rationale
    attempts: _containers.RepeatedCompositeFieldContainer[Attempt]
    reservation_id: str
    route: str
    router_ms: float
    reply_to: str
    max_attempts: int
    routed_unix_ms: float
    reserved_usd: str
    hedge: HedgePlan
    hedge_for: str
    cache_key: str
    cache_ttl_ms: float
    lease_id: str
    lease_held_usd: str
    lease_tokens: int
    def __init__(self, request: _Optional[_Union[InvokeRequest, _Mapping]] = ..., chain: _Optional[_Iterable[_Union[Target, _Mapping]]] = ..., position: _Optional[int] = ..., rationale: _Optional[_Union[Rationale, _Mapping]] = ..., attempts: _Optional[_Iterable[_Union[Attempt, _Mapping]]] = ..., reservation_id: _Optional[str] = ..., route: _Optional[str] = ..., router_ms: _Optional[float] = ..., reply_to: _Optional[str] = ..., max_attempts: _Optional[int] = ..., routed_unix_ms: _Optional[float] = ..., reserved_usd: _Optional[str] = ..., hedge: _Optional[_Union[HedgePlan, _Mapping]] = ..., hedge_for: _Optional[str] = ..., cache_key: _Optional[str] = ..., cache_ttl_ms: _Optional[float] = ..., lease_id: _Optional[str] = ..., lease_held_usd: _Optional[str] = ..., lease_tokens: _Optional[int] = ...) -> None: ...

class HedgePlan(_message.Message):
    __slots__ = ("delay_ms", "max_hedges", "max_share", "window_ms")
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_HEDGES_FIELD_NUMBER: _ClassVar[int]
    MAX_SHARE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_MS_FIELD_NUMBER: _ClassVar[int]
    delay_ms: float
    max_hedges: int
    max_share: float
    window_ms: float
    def __init__(self, delay_ms: _Optional[float] = ..., max_hedges: _Optional[int] = ..., max_share: _Optional[float] = ..., window_ms: _Optional[float] = ...) -> None: ...
