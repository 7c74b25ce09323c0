from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class AuthorizeRequest(_message.Message):
    __slots__ = ("request_id", "project_id", "agent_id", "key_id", "deployment_id", "max_cost_usd", "estimated_tokens", "deadline_unix_ms", "received_unix_ms")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_COST_USD_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    project_id: str
    agent_id: str
    key_id: str
    deployment_id: str
    max_cost_usd: str
    estimated_tokens: int
    deadline_unix_ms: int
    received_unix_ms: int
    def __init__(self, request_id: _Optional[str] = ..., project_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., key_id: _Optional[str] = ..., deployment_id: _Optional[str] = ..., max_cost_usd: _Optional[str] = ..., estimated_tokens: _Optional[int] = ..., deadline_unix_ms: _Optional[int] = ..., received_unix_ms: _Optional[int] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("allow", "deny_code", "deny_reason", "retry_after_s", "reservation_id", "scope", "cap_usd")
    ALLOW_FIELD_NUMBER: _ClassVar[int]
    DENY_CODE_FIELD_NUMBER: _ClassVar[int]
    DENY_REASON_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    CAP_USD_FIELD_NUMBER: _ClassVar[int]
    allow: bool
    deny_code: str
    deny_reason: str
    retry_after_s: float
    reservation_id: str
    scope: str
    cap_usd: str
    def __init__(self, allow: _Optional[bool] = ..., deny_code: _Optional[str] = ..., deny_reason: _Optional[str] = ..., retry_after_s: _Optional[float] = ..., reservation_id: _Optional[str] = ..., scope: _Optional[str] = ..., cap_usd: _Optional[str] = ...) -> None: ...
