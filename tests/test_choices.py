"""The contract's typed tool choice and response format round-trip their JSON (OpenAI) spelling,
and a value no provider could take is refused at the edge with a 400 naming the field. Pure."""

from __future__ import annotations

from typing import Any

import pytest

from switchyard import choices
from switchyard.errors import ErrorCode, GatewayError
from switchyard.v1 import invoke_pb2

NAMED = {"type": "function", "function": {"name": "look"}}
SCHEMA = {
    "type": "json_schema",
    "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
}


@pytest.mark.parametrize("value", ["auto", "none", "required", NAMED])
def test_a_tool_choice_round_trips(value: Any) -> None:
    choice = choices.tool_choice_from_json(value)
    assert choices.tool_choice_json(invoke_pb2.ToolChoice.FromString(choice.SerializeToString())) == value


def test_an_unset_mode_reads_as_auto() -> None:
    assert choices.tool_choice_json(invoke_pb2.ToolChoice()) == "auto"


@pytest.mark.parametrize(
    "value", ["any", {"type": "function"}, {"type": "tool", "name": "x"}, {"function": {"name": ""}}]
)
def test_a_bad_tool_choice_is_a_400_on_tool_choice(value: Any) -> None:
    with pytest.raises(GatewayError) as caught:
        choices.tool_choice_from_json(value)
    assert caught.value.code == ErrorCode.INVALID_REQUEST and caught.value.param == "tool_choice"


@pytest.mark.parametrize(
    "value",
    [
        {"type": "json_object"},
        SCHEMA,
        {"type": "json_schema", "json_schema": {"name": "n", "description": "d"}},
    ],
)
def test_a_response_format_round_trips(value: dict[str, Any]) -> None:
    fmt = choices.response_format_from_json(value)
    assert fmt is not None
    assert (
        choices.response_format_json(invoke_pb2.ResponseFormat.FromString(fmt.SerializeToString())) == value
    )


def test_text_is_the_default_and_not_carried() -> None:
    assert choices.response_format_from_json({"type": "text"}) is None
    assert choices.response_format_json(invoke_pb2.ResponseFormat()) is None


@pytest.mark.parametrize(
    ("value", "param"),
    [
        ({"type": "xml"}, "response_format"),
        ({"type": "json_schema"}, "response_format.json_schema"),
        ({"type": "json_schema", "json_schema": {"name": "n", "schema": [1]}}, "response_format.json_schema"),
    ],
)
def test_a_bad_response_format_is_a_400_naming_it(value: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as caught:
        choices.response_format_from_json(value)
    assert caught.value.code == ErrorCode.INVALID_REQUEST and caught.value.param == param


def test_role_names_come_from_the_contracts_enum() -> None:
    assert choices.ROLES == {
        "system": invoke_pb2.ROLE_SYSTEM,
        "user": invoke_pb2.ROLE_USER,
        "assistant": invoke_pb2.ROLE_ASSISTANT,
        "tool": invoke_pb2.ROLE_TOOL,
    }
    for name, value in choices.ROLES.items():
        assert choices.role_name(choices.role(name)) == name and value
    assert choices.role_name(invoke_pb2.ROLE_UNSPECIFIED) == ""


def test_the_native_apis_role_names_are_the_contracts() -> None:
    from typing import get_args

    from services.ingress import native

    assert set(get_args(native.MessageIn.model_fields["role"].annotation)) == set(choices.ROLES)
