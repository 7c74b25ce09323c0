"""protobuf's JSON mapping of a message as a dict (MessageToDict with the proto's field names),
for the messages converted once or more per request: every ledger row's attempts and rationale
(switchyard/ledger_json.py; GET /v1/requests shows the attempts the same way).

Why: json_format walks each field through several Python calls; py-spy put MessageToDict at
~9 % of the ledger's CPU under load (docs/performance.md). This walks `ListFields` (C) once
and converts each value directly. Exact: the same dict, key order included, for the field kinds
it handles (strings, bools, 32-bit integers, doubles, open enums, nested messages, repeated fields
of those); a message type with any other kind (bytes, 64-bit integers, floats, maps, extensions,
enum values with JSON options, protobuf's well-known types) goes to MessageToDict whole. Pure.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

_PLAIN = {
    FieldDescriptor.CPPTYPE_BOOL,
    FieldDescriptor.CPPTYPE_INT32,
    FieldDescriptor.CPPTYPE_UINT32,
    FieldDescriptor.CPPTYPE_DOUBLE,
    FieldDescriptor.CPPTYPE_ENUM,
    FieldDescriptor.CPPTYPE_MESSAGE,
    FieldDescriptor.CPPTYPE_STRING,
}
# How to convert one field: its JSON name, whether it is repeated, and the conversion of a value
# (None: the value as it is).
Step = tuple[str, bool, Callable[[Any], Any] | None]
# Per message type, each field's step by its number; None: a kind not handled here.
_PLANS: dict[str, dict[int, Step] | None] = {}


def message_dict(message: Message) -> dict[str, Any]:
    """`MessageToDict(message, preserving_proto_field_name=True)`, faster for the kinds above (a
    well-known type is its JSON value, a Timestamp's text say, as there)."""
    plan = _plan(message.DESCRIPTOR)
    if plan is None:
        return MessageToDict(message, preserving_proto_field_name=True)
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        name, repeated, convert = plan[field.number]
        if convert is None:
            out[name] = list(value) if repeated else value
        else:
            out[name] = [convert(item) for item in value] if repeated else convert(value)
    return out


def _double(value: float) -> float | str:
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    return "NaN" if math.isnan(value) else value


def _plan(descriptor: Descriptor | Any, seen: frozenset[str] = frozenset()) -> dict[int, Step] | None:
    # (Any: upb's Descriptor is another class to the type checker, the same API.)
    if descriptor.full_name in _PLANS:
        return _PLANS[descriptor.full_name]
    # Well-known types have JSON of their own; extensions are named by their full name.
    plan: dict[int, Step] | None = {}
    if descriptor.full_name.startswith("google.protobuf.") or descriptor.extension_ranges:
        plan = None
    for field in descriptor.fields:
        if plan is None:
            break
        step = _step(field, seen | {descriptor.full_name})
        if step is None:
            plan = None
        else:
            plan[field.number] = step
    if not seen:  # a verdict reached inside a recursive type's cycle is not cached
        _PLANS[descriptor.full_name] = plan
    return plan


def _step(field: FieldDescriptor, seen: frozenset[str]) -> Step | None:
    kind, repeated = field.cpp_type, field.is_repeated
    if kind not in _PLAIN or field.type == FieldDescriptor.TYPE_BYTES:
        return None
    if kind == FieldDescriptor.CPPTYPE_DOUBLE:
        return field.name, repeated, _double
    if kind == FieldDescriptor.CPPTYPE_ENUM:
        enum = field.enum_type  # open, and no value with a JSON name of its own (an option)
        if enum is None or enum.is_closed or any(v.GetOptions().ListFields() for v in enum.values):
            return None
        names = {v.number: v.name for v in enum.values}
        return field.name, repeated, lambda number: names.get(number, number)
    if kind == FieldDescriptor.CPPTYPE_MESSAGE:
        nested = field.message_type
        if nested is None or nested.GetOptions().map_entry:
            return None
        if nested.full_name not in seen and _plan(nested, seen) is None:
            return None
        return field.name, repeated, message_dict
    return field.name, repeated, None
