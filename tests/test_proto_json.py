"""switchyard/proto_json.py: the same dict as protobuf's MessageToDict (proto field names), key
order included, for every message type of the gateway's contracts filled at random, and for
the kinds it hands to MessageToDict (64-bit integers, bytes, maps, well-known types)."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from switchyard.proto_json import message_dict
from switchyard.v1 import budget_pb2, events_pb2, gateway_pb2, invoke_pb2, ledger_pb2, liveness_pb2

MODULES = [invoke_pb2, events_pb2, budget_pb2, ledger_pb2, liveness_pb2, gateway_pb2]
MESSAGE_TYPES = sorted(
    (getattr(module, name) for module in MODULES for name in module.DESCRIPTOR.message_types_by_name),
    key=lambda cls: cls.DESCRIPTOR.full_name,
)
DOUBLES = [0.0, 1.5, -2.25, 1e300, 5e-324, math.nan, math.inf, -math.inf, 0.1 + 0.2]


def scalar(field: FieldDescriptor, rng: random.Random) -> Any:
    kind = field.cpp_type
    if kind == FieldDescriptor.CPPTYPE_STRING:
        if field.type == FieldDescriptor.TYPE_BYTES:
            return rng.randbytes(rng.randint(0, 8))
        return rng.choice(["", "ok", 'é✓ "quoted"', "x" * rng.randint(1, 40)])
    if kind == FieldDescriptor.CPPTYPE_BOOL:
        return rng.random() < 0.5
    if kind == FieldDescriptor.CPPTYPE_INT32:
        return rng.randint(-(2**31), 2**31 - 1)
    if kind == FieldDescriptor.CPPTYPE_UINT32:
        return rng.randint(0, 2**32 - 1)
    if kind == FieldDescriptor.CPPTYPE_INT64:
        return rng.randint(-(2**63), 2**63 - 1)
    if kind == FieldDescriptor.CPPTYPE_UINT64:
        return rng.randint(0, 2**64 - 1)
    if kind in (FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT):
        return rng.choice(DOUBLES) if rng.random() < 0.5 else rng.uniform(-1e6, 1e6)
    if kind == FieldDescriptor.CPPTYPE_ENUM:
        numbers = [v.number for v in field.enum_type.values]
        return rng.choice(numbers + ([] if field.enum_type.is_closed else [999]))
    raise AssertionError(f"no random value for {field.full_name}")


def fill(message: Message, rng: random.Random, depth: int = 0) -> Message:
    for field in message.DESCRIPTOR.fields:
        if rng.random() < 0.3:
            continue  # left unset: not in either dict
        nested = field.message_type
        if nested is not None and (nested.GetOptions().map_entry or nested.full_name.startswith("google.")):
            continue  # maps and well-known types: tested on their own below
        if field.is_repeated:
            for _ in range(rng.randint(0, 3)):
                if nested is None:
                    getattr(message, field.name).append(scalar(field, rng))
                elif depth < 3:
                    fill(getattr(message, field.name).add(), rng, depth + 1)
        elif nested is not None:
            if depth < 3:
                child = getattr(message, field.name)
                child.SetInParent()  # set, even if nothing in it is: `{}` in both
                fill(child, rng, depth + 1)
        else:
            setattr(message, field.name, scalar(field, rng))
    return message


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=lambda cls: cls.DESCRIPTOR.full_name)
def test_the_same_dict_as_message_to_dict_for_every_contract_message(cls: type[Message]) -> None:
    rng = random.Random(cls.DESCRIPTOR.full_name)
    for _ in range(25):
        message = fill(cls(), rng)
        ours, theirs = message_dict(message), MessageToDict(message, preserving_proto_field_name=True)
        assert ours == theirs
        assert repr(ours) == repr(theirs)  # key order, and NaN written the same way


def test_the_kinds_it_does_not_convert_go_to_message_to_dict() -> None:
    stamp = Timestamp(seconds=1_700_000_000, nanos=5)
    struct = Struct()
    struct.update({"a": 1, "b": [True, None, "x"]})
    held = liveness_pb2.HeldRequest(request_id="r", unstored_record=b"\x00\xff")  # bytes
    for message in (stamp, struct, held):
        assert message_dict(message) == MessageToDict(message, preserving_proto_field_name=True)
    assert message_dict(stamp) == "2023-11-14T22:13:20.000000005Z"  # its own JSON, not its fields
    assert message_dict(held)["unstored_record"] == "AP8="


def test_a_rationale_as_the_ledger_stores_it() -> None:
    rationale = invoke_pb2.Rationale(route="auto", winner="openai/a", decision_ms=0.045, chain=["openai/a"])
    rationale.candidates.add(deployment_id="openai/a", total=0.8, eligible=True, inflight=3)
    assert message_dict(rationale) == {
        "route": "auto",
        "candidates": [{"deployment_id": "openai/a", "total": 0.8, "eligible": True, "inflight": 3}],
        "winner": "openai/a",
        "chain": ["openai/a"],
        "decision_ms": 0.045,
    }
