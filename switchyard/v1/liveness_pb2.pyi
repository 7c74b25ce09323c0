from switchyard.v1 import invoke_pb2 as _invoke_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HeldRequest(_message.Message):
    __slots__ = ("request_id", "deployment_id", "used", "used_cost_usd", "unstored_record", "finished")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    USED_COST_USD_FIELD_NUMBER: _ClassVar[int]
    UNSTORED_RECORD_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    deployment_id: str
    used: _invoke_pb2.Usage
    used_cost_usd: str
    unstored_record: bytes
    finished: bool
    def __init__(self, request_id: _Optional[str] = ..., deployment_id: _Optional[str] = ..., used: _Optional[_Union[_invoke_pb2.Usage, _Mapping]] = ..., used_cost_usd: _Optional[str] = ..., unstored_record: _Optional[bytes] = ..., finished: _Optional[bool] = ...) -> None: ...

class WorkerBeat(_message.Message):
    __slots__ = ("worker_id", "held", "done", "interval_ms")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    held: _containers.RepeatedCompositeFieldContainer[HeldRequest]
    done: _containers.RepeatedScalarFieldContainer[str]
    interval_ms: float
    def __init__(self, worker_id: _Optional[str] = ..., held: _Optional[_Iterable[_Union[HeldRequest, _Mapping]]] = ..., done: _Optional[_Iterable[str]] = ..., interval_ms: _Optional[float] = ...) -> None: ...

class InflightJournal(_message.Message):
    __slots__ = ("instance", "updated_unix_ms", "records")
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    UPDATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    instance: str
    updated_unix_ms: float
    records: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, instance: _Optional[str] = ..., updated_unix_ms: _Optional[float] = ..., records: _Optional[_Iterable[bytes]] = ...) -> None: ...
