"""The OpenAPI description stays true: a valid OpenAPI 3.1 document, the same paths and methods
as the app's routes, and schemas that the real request bodies and real answers conform to."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from services.ingress import anthropic_api, native, openai_api, responses_api
from services.ingress.app import Ingress
from services.ingress.openapi import openapi_document
from switchyard.catalog import build_catalog
from switchyard.errors import HTTP_STATUS, GatewayError
from switchyard.settings import Settings
from tests.support.frames import final_frame, stamped_request, text_chunk

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def schema_validator(name: str) -> Draft202012Validator:
    doc = openapi_document()
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": doc["components"]})


def conforms(name: str, instance: Any) -> None:
    errors = sorted(schema_validator(name).iter_errors(instance), key=str)
    assert not errors, f"{name}: {[e.message for e in errors[:3]]}"


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = openapi_document()
    assert doc["openapi"] == "3.1.0"
    validate(doc)


def test_paths_and_methods_match_the_apps_routes() -> None:
    app = Ingress(Settings()).app
    served = {
        (re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path), method.lower())
        for route in app.routes
        for method in route.methods or ()
        if method != "HEAD"  # Starlette adds HEAD to every GET
    }
    described = {
        (path, method)
        for path, item in openapi_document()["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    assert described == served


def test_every_error_status_of_a_model_call_is_described() -> None:
    """Each neutral code's status on each API appears among the operation's responses."""
    paths = openapi_document()["paths"]
    # client_closed is never seen by the client; method_not_allowed and conflict (admin writes
    # racing) cannot come from a model call.
    never = ("client_closed", "method_not_allowed", "conflict")
    statuses = {
        "/llm.invoke": {s for c, s in HTTP_STATUS.items() if c not in never},
        "/v1/chat/completions": {s for c, (s, _, _) in openai_api.ERRORS.items() if c not in never},
        "/v1/messages": {s for c, (s, _) in anthropic_api.ERRORS.items() if c not in never},
        "/v1/responses": {s for c, (s, _, _) in openai_api.ERRORS.items() if c not in never},
    }
    for path, expected in statuses.items():
        described = {int(s) for s in paths[path]["post"]["responses"]}
        assert expected <= described, (path, expected - described)


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("InvokeBody", {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "strategy": "best"}),
        (
            "ChatCompletionRequest",
            {
                "model": "auto",
                "messages": [
                    {"role": "system", "content": "s"},
                    {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                    {"role": "assistant", "content": None, "tool_calls": [
                        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                    {"role": "tool", "tool_call_id": "c", "content": "x"},
                ],
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {}}},
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        ),
        (
            "MessagesRequest",
            {
                "model": "auto",
                "max_tokens": 5,
                "system": "s",
                "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                "tool_choice": {"type": "auto"},
            },
        ),
        ("ResponsesRequest", {"model": "auto", "input": "hi", "instructions": "s"}),
        (
            "ResponsesRequest",
            {
                "model": "auto",
                "input": [
                    {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
                    {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
                    {"type": "function_call_output", "call_id": "c", "output": "x"},
                ],
                "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
                "text": {"format": {"type": "json_schema", "name": "a", "schema": {}}},
                "previous_response_id": "resp_1",
                "stream": True,
            },
        ),
    ],
)  # fmt: skip
def test_request_schemas_accept_what_the_api_accepts(name: str, body: dict) -> None:
    conforms(name, body)


def test_request_schemas_reject_what_the_api_rejects() -> None:
    assert not schema_validator("ChatCompletionRequest").is_valid({"model": "auto", "messages": []})
    assert not schema_validator("MessagesRequest").is_valid(
        {"model": "auto", "messages": [{"role": "user", "content": "x"}]}
    )
    assert not schema_validator("InvokeBody").is_valid(
        {"model": "auto", "messages": [{"role": "user", "content": "x"}], "surprise": 1}
    )


def test_answers_conform_to_their_schemas() -> None:
    request = stamped_request()
    text = final_frame("hello")
    tools = final_frame(tool_calls=[("call_1", "f", '{"a":1}')], finish="tool_calls")
    for frame in (text, tools):
        conforms("ChatCompletion", openai_api.completion_json(request, frame.final))
        conforms("Message", anthropic_api.message_json(request, frame.final))
        conforms("InvokeResult", native.response_json(frame.final))
    parsed = responses_api.ResponsesApi().parse(b'{"model": "auto", "input": "hi"}', 64)
    parsed.request.CopyFrom(request)
    for frame in (text, tools, final_frame("cut", finish="length")):
        conforms("ResponseObject", responses_api.final_json(parsed, frame.final))
    stream = responses_api.ResponseStream(parsed)
    for event in stream(text_chunk(0, "hi")) + stream(GatewayError("timeout", "late")):
        data = orjson.loads(event.split(b"data: ", 1)[1])
        if "response" in data:
            conforms("ResponseObject", data["response"])
    catalog = build_catalog({"aliases": {"gpt-4o": "best"}}, {})
    conforms("OpenAIModelList", openai_api.models_json(catalog))
    conforms("OpenAIModel", openai_api.model_json(catalog, "demo/fast"))
    conforms("AnthropicModelList", anthropic_api.models_json(catalog))
    conforms("AnthropicModel", anthropic_api.model_json("auto"))


def test_stream_chunks_conform_to_their_schema() -> None:
    import orjson

    stream = openai_api.ChunkStream(stamped_request(stream=True), include_usage=True)
    raw = stream(text_chunk(0, "hi")) + stream(final_frame("hi"))
    for event in raw:
        data = event[len(b"data: ") : -2]
        if data != b"[DONE]":
            conforms("ChatCompletionChunk", orjson.loads(data))


@pytest.mark.parametrize("code", sorted(HTTP_STATUS))
def test_error_bodies_conform_for_every_code(code: str) -> None:
    error = GatewayError(code, "msg", param="model")
    conforms("NativeErrorResponse", native.error_json(code, "msg", "req_1", "model"))
    conforms("OpenAIErrorResponse", openai_api.error_body(error)[1])
    conforms("AnthropicErrorResponse", anthropic_api.error_body(error, "req_1")[1])
