from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AuthorizeRequest(_message.Message):
    __slots__ = ("request_id", "project_id", "agent_id", "key_id", "deployment_id", "max_cost_usd", "estimated_tokens", "deadline_unix_ms", "received_unix_ms", "candidates", "lease_for", "returns")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_COST_USD_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    LEASE_FOR_FIELD_NUMBER: _ClassVar[int]
    RETURNS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    project_id: str
    agent_id: str
    key_id: str
    deployment_id: str
    max_cost_usd: str
    estimated_tokens: int
    deadline_unix_ms: int
    received_unix_ms: int
    candidates: _containers.RepeatedCompositeFieldContainer[QuotaCandidate]
    lease_for: str
    returns: _containers.RepeatedCompositeFieldContainer[LeaseReturn]
    def __init__(self, request_id: _Optional[str] = ..., project_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., key_id: _Optional[str] = ..., deployment_id: _Optional[str] = ..., max_cost_usd: _Optional[str] = ..., estimated_tokens: _Optional[int] = ..., deadline_unix_ms: _Optional[int] = ..., received_unix_ms: _Optional[int] = ..., candidates: _Optional[_Iterable[_Union[QuotaCandidate, _Mapping]]] = ..., lease_for: _Optional[str] = ..., returns: _Optional[_Iterable[_Union[LeaseReturn, _Mapping]]] = ...) -> None: ...

class QuotaCandidate(_message.Message):
    __slots__ = ("deployment_id", "max_cost_usd", "input_tokens", "output_tokens")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_COST_USD_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    max_cost_usd: str
    input_tokens: int
    output_tokens: int
    def __init__(self, deployment_id: _Optional[str] = ..., max_cost_usd: _Optional[str] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("allow", "deny_code", "deny_reason", "retry_after_ms", "reservation_id", "scope", "cap_usd", "deployment_id", "at_quota", "held_usd", "lease")
    ALLOW_FIELD_NUMBER: _ClassVar[int]
    DENY_CODE_FIELD_NUMBER: _ClassVar[int]
    DENY_REASON_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    CAP_USD_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    AT_QUOTA_FIELD_NUMBER: _ClassVar[int]
    HELD_USD_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    allow: bool
    deny_code: str
    deny_reason: str
    retry_after_ms: float
    reservation_id: str
    scope: str
    cap_usd: str
    deployment_id: str
    at_quota: _containers.RepeatedScalarFieldContainer[str]
    held_usd: str
    lease: LeaseGrant
    def __init__(self, allow: _Optional[bool] = ..., deny_code: _Optional[str] = ..., deny_reason: _Optional[str] = ..., retry_after_ms: _Optional[float] = ..., reservation_id: _Optional[str] = ..., scope: _Optional[str] = ..., cap_usd: _Optional[str] = ..., deployment_id: _Optional[str] = ..., at_quota: _Optional[_Iterable[str]] = ..., held_usd: _Optional[str] = ..., lease: _Optional[_Union[LeaseGrant, _Mapping]] = ...) -> None: ...

class LeaseAsk(_message.Message):
    __slots__ = ("router_id", "project_id", "agent_id", "key_id", "unit_usd", "want", "returns", "tokens_per_request")
    ROUTER_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    UNIT_USD_FIELD_NUMBER: _ClassVar[int]
    WANT_FIELD_NUMBER: _ClassVar[int]
    RETURNS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    router_id: str
    project_id: str
    agent_id: str
    key_id: str
    unit_usd: str
    want: bool
    returns: _containers.RepeatedCompositeFieldContainer[LeaseReturn]
    tokens_per_request: int
    def __init__(self, router_id: _Optional[str] = ..., project_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., key_id: _Optional[str] = ..., unit_usd: _Optional[str] = ..., want: _Optional[bool] = ..., returns: _Optional[_Iterable[_Union[LeaseReturn, _Mapping]]] = ..., tokens_per_request: _Optional[int] = ...) -> None: ...

class LeaseGrant(_message.Message):
    __slots__ = ("lease_id", "amount_usd", "requests", "ttl_ms", "hold_until_unix_ms", "at_unix_ms", "capped", "reason", "rate_limited", "tokens")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_USD_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    HOLD_UNTIL_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    CAPPED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMITED_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    amount_usd: str
    requests: int
    ttl_ms: float
    hold_until_unix_ms: int
    at_unix_ms: int
    capped: bool
    reason: str
    rate_limited: bool
    tokens: int
    def __init__(self, lease_id: _Optional[str] = ..., amount_usd: _Optional[str] = ..., requests: _Optional[int] = ..., ttl_ms: _Optional[float] = ..., hold_until_unix_ms: _Optional[int] = ..., at_unix_ms: _Optional[int] = ..., capped: _Optional[bool] = ..., reason: _Optional[str] = ..., rate_limited: _Optional[bool] = ..., tokens: _Optional[int] = ...) -> None: ...

class LeaseReturn(_message.Message):
    __slots__ = ("lease_id", "admissions")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    ADMISSIONS_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    admissions: _containers.RepeatedCompositeFieldContainer[LeaseAdmission]
    def __init__(self, lease_id: _Optional[str] = ..., admissions: _Optional[_Iterable[_Union[LeaseAdmission, _Mapping]]] = ...) -> None: ...

class LeaseAdmission(_message.Message):
    __slots__ = ("request_id", "held_usd", "deadline_unix_ms", "received_unix_ms", "tokens")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    HELD_USD_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    held_usd: str
    deadline_unix_ms: int
    received_unix_ms: int
    tokens: int
    def __init__(self, request_id: _Optional[str] = ..., held_usd: _Optional[str] = ..., deadline_unix_ms: _Optional[int] = ..., received_unix_ms: _Optional[int] = ..., tokens: _Optional[int] = ...) -> None: ...

class LeaseRevoke(_message.Message):
    __slots__ = ("lease_ids",)
    LEASE_IDS_FIELD_NUMBER: _ClassVar[int]
    lease_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, lease_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class LeaseRecord(_message.Message):
    __slots__ = ("lease_id", "router_id", "project_id", "agent_id", "key_id", "amount_usd", "at_unix_ms", "hold_until_unix_ms", "rate_requests", "rate_tokens", "rate_until_unix_ms")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    ROUTER_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_USD_FIELD_NUMBER: _ClassVar[int]
    AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    HOLD_UNTIL_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    RATE_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    RATE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    RATE_UNTIL_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    router_id: str
    project_id: str
    agent_id: str
    key_id: str
    amount_usd: str
    at_unix_ms: int
    hold_until_unix_ms: int
    rate_requests: int
    rate_tokens: int
    rate_until_unix_ms: int
    def __init__(self, lease_id: _Optional[str] = ..., router_id: _Optional[str] = ..., project_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., key_id: _Optional[str] = ..., amount_usd: _Optional[str] = ..., at_unix_ms: _Optional[int] = ..., hold_until_unix_ms: _Optional[int] = ..., rate_requests: _Optional[int] = ..., rate_tokens: _Optional[int] = ..., rate_until_unix_ms: _Optional[int] = ...) -> None: ...

class QuotaState(_message.Message):
    __slots__ = ("ts_unix_ms", "deployments")
    TS_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    ts_unix_ms: int
    deployments: _containers.RepeatedCompositeFieldContainer[DeploymentQuota]
    def __init__(self, ts_unix_ms: _Optional[int] = ..., deployments: _Optional[_Iterable[_Union[DeploymentQuota, _Mapping]]] = ...) -> None: ...

class DeploymentQuota(_message.Message):
    __slots__ = ("deployment_id", "rpm_limit", "requests_available", "input_tpm_limit", "input_tokens_available", "output_tpm_limit", "output_tokens_available", "max_concurrent", "concurrent", "headroom", "wait_ms", "granted", "refused", "tpm_limit", "tokens_available")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    RPM_LIMIT_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    INPUT_TPM_LIMIT_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TPM_LIMIT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_FIELD_NUMBER: _ClassVar[int]
    CONCURRENT_FIELD_NUMBER: _ClassVar[int]
    HEADROOM_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    TPM_LIMIT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    rpm_limit: int
    requests_available: float
    input_tpm_limit: int
    input_tokens_available: float
    output_tpm_limit: int
    output_tokens_available: float
    max_concurrent: int
    concurrent: int
    headroom: float
    wait_ms: float
    granted: int
    refused: int
    tpm_limit: int
    tokens_available: float
    def __init__(self, deployment_id: _Optional[str] = ..., rpm_limit: _Optional[int] = ..., requests_available: _Optional[float] = ..., input_tpm_limit: _Optional[int] = ..., input_tokens_available: _Optional[float] = ..., output_tpm_limit: _Optional[int] = ..., output_tokens_available: _Optional[float] = ..., max_concurrent: _Optional[int] = ..., concurrent: _Optional[int] = ..., headroom: _Optional[float] = ..., wait_ms: _Optional[float] = ..., granted: _Optional[int] = ..., refused: _Optional[int] = ..., tpm_limit: _Optional[int] = ..., tokens_available: _Optional[float] = ...) -> None: ...
