"""The contract's typed fields and their JSON spelling: tool choice, response format, role.

The contract types them (ToolChoice, ResponseFormat in invoke.proto) so a bad value is refused
at the edge rather than by a provider. Their JSON spelling is OpenAI's, which the native API
accepts too: the ingress turns a body's value into the message here, and the provider adapters
turn the message back into that shape before translating it to their provider's. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import orjson

from switchyard.errors import ErrorCode, GatewayError
from switchyard.v1 import invoke_pb2

ToolChoice = invoke_pb2.ToolChoice
ResponseFormat = invoke_pb2.ResponseFormat

_MODES = {"auto": ToolChoice.MODE_AUTO, "none": ToolChoice.MODE_NONE, "required": ToolChoice.MODE_REQUIRED}
_MODE_NAMES = {mode: name for name, mode in _MODES.items()}


# Role names as the HTTP APIs spell them ("user"), derived from the contract's enum (ROLE_USER).
ROLES: dict[str, invoke_pb2.Role] = {
    invoke_pb2.Role.Name(value).removeprefix("ROLE_").lower(): cast("invoke_pb2.Role", value)
    for value in invoke_pb2.Role.values()
    if value
}
ROLE_NAMES: dict[int, str] = {value: name for name, value in ROLES.items()}


def role(name: str) -> invoke_pb2.Role:
    """The enum of a role name the body models already checked ("user" -> ROLE_USER)."""
    return ROLES[name]


def role_name(value: int) -> str:
    """ "user" for ROLE_USER; "" for an unset or unknown role."""
    return ROLE_NAMES.get(value, "")


def _invalid(message: str, param: str) -> GatewayError:
    return GatewayError(ErrorCode.INVALID_REQUEST, message, param=param)


def tool_choice_from_json(value: str | Mapping[str, Any]) -> invoke_pb2.ToolChoice:
    """ "auto" | "none" | "required" | {"type": "function", "function": {"name": ...}}."""
    if isinstance(value, str):
        if value not in _MODES:
            raise _invalid(
                f"tool_choice must be one of {', '.join(_MODES)} or a named function", "tool_choice"
            )
        return ToolChoice(mode=_MODES[value])
    function = value.get("function")
    name = function.get("name") if isinstance(function, Mapping) else None
    if value.get("type") != "function" or not isinstance(name, str) or not name:
        raise _invalid(
            'tool_choice object must be {"type": "function", "function": {"name": ...}}', "tool_choice"
        )
    return ToolChoice(mode=ToolChoice.MODE_TOOL, name=name)


def tool_choice_json(choice: invoke_pb2.ToolChoice) -> str | dict[str, Any]:
    """The neutral (OpenAI) spelling of a tool choice; MODE_UNSPECIFIED reads as "auto"."""
    if choice.mode == ToolChoice.MODE_TOOL:
        return {"type": "function", "function": {"name": choice.name}}
    return _MODE_NAMES.get(choice.mode, "auto")


def response_format_from_json(value: Mapping[str, Any]) -> invoke_pb2.ResponseFormat | None:
    """{"type": "text"} (None: the default) | {"type": "json_object"} |
    {"type": "json_schema", "json_schema": {"name", "description"?, "schema"?, "strict"?}}."""
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return ResponseFormat(type=ResponseFormat.TYPE_JSON_OBJECT)
    if kind != "json_schema":
        raise _invalid("response_format.type must be text, json_object or json_schema", "response_format")
    spec = value.get("json_schema")
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str) or not spec["name"]:
        raise _invalid("response_format.json_schema needs a name", "response_format.json_schema")
    fmt = ResponseFormat(type=ResponseFormat.TYPE_JSON_SCHEMA, name=spec["name"])
    if spec.get("description") is not None:
        fmt.description = str(spec["description"])
    if spec.get("schema") is not None:
        if not isinstance(spec["schema"], Mapping):
            raise _invalid(
                "response_format.json_schema.schema must be an object", "response_format.json_schema"
            )
        fmt.schema_json = orjson.dumps(spec["schema"]).decode()
    if spec.get("strict") is not None:
        fmt.strict = bool(spec["strict"])
    return fmt


def response_format_json(fmt: invoke_pb2.ResponseFormat) -> dict[str, Any] | None:
    """The neutral (OpenAI) spelling of a response format; None for text (the default)."""
    if fmt.type == ResponseFormat.TYPE_JSON_OBJECT:
        return {"type": "json_object"}
    if fmt.type != ResponseFormat.TYPE_JSON_SCHEMA:
        return None
    spec: dict[str, Any] = {"name": fmt.name}
    if fmt.description:
        spec["description"] = fmt.description
    if fmt.schema_json:
        try:
            spec["schema"] = orjson.loads(fmt.schema_json)
        except orjson.JSONDecodeError:
            raise _invalid(
                "response_format.schema_json is not valid JSON", "response_format.schema_json"
            ) from None
    if fmt.HasField("strict"):
        spec["strict"] = fmt.strict
    return {"type": "json_schema", "json_schema": spec}
