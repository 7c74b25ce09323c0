"""The Responses API's pure translations: bodies into the contract (and what is refused), stored
items replayed as messages, answers and stream events in OpenAI's shapes, each event checked
against the official `openai` SDK's own types (it parses every event by its `type`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import nats
import orjson
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from services.ingress.response_store import ResponseStore, StoredResponse
from services.ingress.responses_api import (
    ParsedResponses,
    ResponsesApi,
    ResponseStream,
    final_json,
    replayed_messages,
    with_history,
)
from switchyard.errors import GatewayError
from switchyard.tenancy_store import open_bucket
from switchyard.v1 import invoke_pb2
from tests.support.frames import final_frame, text_chunk, tool_chunk

if TYPE_CHECKING:  # a runtime import would mark every test here a stack test (conftest.py)
    from switchyard.natsserver import NatsServer

API = ResponsesApi()
EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


def parsed(body: dict[str, Any]) -> ParsedResponses:
    result = API.parse(orjson.dumps({"model": "auto", **body}), 64)
    result.request.request_id = "req_TEST123"
    result.request.received_unix_ms = 1_700_000_000_123.0
    return result


def refusal(body: dict[str, Any]) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        parsed(body)
    assert caught.value.code == "invalid_request"
    return caught.value


def roles_and_text(request: invoke_pb2.InvokeRequest) -> list[tuple[int, str]]:
    return [(m.role, "".join(p.text for p in m.content)) for m in request.messages]


def test_a_string_input_with_instructions() -> None:
    request = parsed(
        {"input": "hi", "instructions": "Be brief.", "max_output_tokens": 9, "metadata": {"team": "x"}}
    ).request
    assert request.api == "responses" and request.max_tokens == 9
    assert roles_and_text(request) == [(invoke_pb2.ROLE_SYSTEM, "Be brief."), (invoke_pb2.ROLE_USER, "hi")]
    assert dict(request.metadata) == {"team": "x"}


def test_items_become_messages_with_tool_calls_joined_to_their_turn() -> None:
    request = parsed(
        {
            "input": [
                {"role": "developer", "content": "rules"},
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "look"},
                        {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"},
                    ],
                },
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": ""}]},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}", "id": "fc_1"},
                {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "one"},
                {"type": "function_call_output", "call_id": "c2", "output": "two"},
            ]
        }
    ).request
    system, user, assistant, first, second = request.messages
    assert system.role == invoke_pb2.ROLE_SYSTEM
    assert user.content[1].image.url == "https://x/y.png" and user.content[1].image.detail == "low"
    # The empty assistant text is dropped; both calls are one assistant turn.
    assert assistant.role == invoke_pb2.ROLE_ASSISTANT and not assistant.content
    assert [(c.id, c.name) for c in assistant.tool_calls] == [("c1", "f"), ("c2", "g")]
    assert (first.role, first.tool_call_id, second.tool_call_id) == (invoke_pb2.ROLE_TOOL, "c1", "c2")


def test_tools_choice_and_json_schema_reach_the_typed_contract() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    request = parsed(
        {
            "input": "x",
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "f"},
            "text": {"format": {"type": "json_schema", "name": "out", "schema": schema, "strict": True}},
        }
    ).request
    assert request.tools[0].name == "f"
    assert request.tool_choice.mode == invoke_pb2.ToolChoice.MODE_TOOL and request.tool_choice.name == "f"
    fmt = request.response_format
    assert fmt.type == invoke_pb2.ResponseFormat.TYPE_JSON_SCHEMA and fmt.name == "out" and fmt.strict
    assert orjson.loads(fmt.schema_json) == schema


@pytest.mark.parametrize(
    ("body", "needle", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "built-in tool 'web_search' is not supported", "tools.0"),
        ({"tools": [{"type": "file_search", "vector_store_ids": []}]}, "'file_search'", "tools.0"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input items must be messages", "input.0"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input_file", "input.0"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]}, "file_id", "input.0"),
        ({"background": True}, "background responses are not supported", ""),
        ({"conversation": "conv_1"}, "use previous_response_id", ""),
        ({"input": []}, "at least 1 item", "input"),
        ({"max_output_tokens": 0}, "greater than or equal to 1", "max_output_tokens"),
    ],
)  # fmt: skip
def test_what_is_not_translated_is_refused_by_name(body: dict, needle: str, param: str) -> None:
    error = refusal({"input": "x", **body})
    assert needle in error.message
    assert error.param.startswith(param)


def test_reasoning_effort_is_accepted_and_echoed() -> None:
    result = parsed({"input": "x", "reasoning": {"effort": "high"}})
    final = final_frame("ok").final
    assert final_json(result, final)["reasoning"] == {"effort": "high", "summary": None}


def test_a_previous_conversation_goes_between_instructions_and_the_new_input() -> None:
    result = parsed({"input": "and now?", "instructions": "new rules"})
    history = replayed_messages(
        [
            {"type": "message", "role": "user", "content": "first"},
            final_json(parsed({"input": "first"}), final_frame("answer").final)["output"][0],
        ]
    )
    with_history(result.request, history, has_instructions=True)
    assert roles_and_text(result.request) == [
        (invoke_pb2.ROLE_SYSTEM, "new rules"),
        (invoke_pb2.ROLE_USER, "first"),
        (invoke_pb2.ROLE_ASSISTANT, "answer"),
        (invoke_pb2.ROLE_USER, "and now?"),
    ]


def test_the_answer_is_an_sdk_response() -> None:
    result = parsed({"input": "x", "tools": [{"type": "function", "name": "f"}]})
    frame = final_frame("text", tool_calls=[("call_1", "f", '{"a":1}')], finish="tool_calls", cached=2)
    body = final_json(result, frame.final)
    response = Response.model_validate(body)
    assert response.id == "resp_TEST123" and response.status == "completed"
    assert [item.type for item in response.output] == ["message", "function_call"]
    assert response.output[1].call_id == "call_1"
    assert response.usage.input_tokens_details.cached_tokens == 2
    assert response.model_extra["switchyard"]["request_id"] == "req_TEST123"
    length = final_json(result, final_frame("cut", finish="length").final)
    assert length["status"] == "incomplete"
    assert length["incomplete_details"] == {"reason": "max_output_tokens"}


def events(stream: ResponseStream, *frames: Any) -> list[Any]:
    """Every event of the frames, checked against the SDK's union of stream events."""
    out = []
    for frame in frames:
        for raw in stream(frame):
            name, data = raw.decode().split("\n")[:2]
            payload = orjson.loads(data.removeprefix("data: "))
            assert name == f"event: {payload['type']}"
            out.append(EVENTS.validate_python(payload))
    return out


def test_a_streamed_answer_has_the_reference_events_in_order() -> None:
    stream = ResponseStream(parsed({"input": "x", "stream": True}))
    got = events(
        stream,
        text_chunk(0, "Hel"),
        text_chunk(1, "lo"),
        tool_chunk(2, 0, "call_9", "f", '{"a"'),
        tool_chunk(3, 0, args=":1}"),
        final_frame("Hello", tool_calls=[("call_9", "f", '{"a":1}')], finish="tool_calls"),
    )
    assert [e.type for e in got] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in got] == list(range(len(got)))
    completed = got[-1].response
    assert completed.usage.output_tokens == 5
    assert [item.id for item in completed.output] == [got[2].item.id, got[9].item.id]
    assert completed.output[1].arguments == '{"a":1}' and completed.output[1].call_id == "call_9"
    assert stream.finished is not None and stream.finished["id"] == completed.id


def test_an_answer_that_was_not_streamed_is_sent_whole_before_it_completes() -> None:
    got = events(
        ResponseStream(parsed({"input": "x", "stream": True})),
        final_frame(tool_calls=[("call_1", "f", "{}")], finish="tool_calls"),
    )
    kinds = [e.type for e in got]
    assert kinds[2:] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]


def test_an_error_mid_stream_fails_in_band_with_what_was_delivered() -> None:
    stream = ResponseStream(parsed({"input": "x", "stream": True}))
    got = events(
        stream, text_chunk(0, "par"), GatewayError("upstream_error", "the upstream closed the connection")
    )
    failed = got[-1]
    assert failed.type == "response.failed" and failed.response.status == "failed"
    assert failed.response.error.code == "server_error"
    assert failed.response.model_extra["switchyard"]["error_code"] == "upstream_error"
    assert failed.response.output[0].content[0].text == "par"
    assert failed.response.output[0].status == "incomplete"
    assert stream.finished is None  # nothing to store


async def test_the_store_keeps_a_response_for_its_project_only(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        kv = await open_bucket(nc.jetstream(), "responses_test", ttl_s=60)
        store = ResponseStore(kv, max_bytes=2000)
        record = StoredResponse("p1", {"id": "resp_1", "output": [{"type": "message"}]}, [{"role": "user"}])
        assert await store.put(record)
        assert await store.get("p1", "resp_1") == record
        assert record.history() == [{"role": "user"}, {"type": "message"}]
        assert await store.get("p2", "resp_1") is None  # another project's reads as missing
        assert not await store.delete("p2", "resp_1")
        assert await store.get("p1", "resp.1>") is None  # not a key: never a stored response
        too_big = StoredResponse("p1", {"id": "resp_2", "output": []}, [{"text": "x" * 3000}])
        assert not await store.put(too_big)  # answered, not stored
        assert await store.get("p1", "resp_2") is None
        assert await store.delete("p1", "resp_1")
        assert await store.get("p1", "resp_1") is None
        assert not await store.delete("p1", "resp_1")
    finally:
        await nc.close()


def test_input_items_are_listed_typed_with_stable_ids_a_page_at_a_time() -> None:
    from services.ingress import response_items

    items = [
        {"type": "message", "role": "user", "content": "Weather?"},
        {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"type": "message", "role": "assistant", "content": "Sunny."},
        {"id": "msg_x_0", "type": "message", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "kept"}]},
    ]  # fmt: skip
    first = response_items.items_page("resp_abc", items, response_items.parse_query({"limit": "2"}))
    assert [i["id"] for i in first["data"]] == ["msg_x_0", "msg_abc_in3"]  # newest first by default
    assert first["has_more"] and (first["first_id"], first["last_id"]) == ("msg_x_0", "msg_abc_in3")
    assert first["data"][1]["content"] == [{"type": "output_text", "text": "Sunny."}]
    rest = response_items.items_page(
        "resp_abc", items, response_items.parse_query({"after": first["last_id"], "limit": "5"})
    )
    assert [i["id"] for i in rest["data"]] == ["fco_abc_in2", "fc_abc_in1", "msg_abc_in0"]
    assert not rest["has_more"]
    assert rest["data"][2] == {"id": "msg_abc_in0", "type": "message", "role": "user", "status": "completed",
                               "content": [{"type": "input_text", "text": "Weather?"}]}  # fmt: skip
    ascending = response_items.items_page("resp_abc", items, response_items.parse_query({"order": "asc"}))
    assert [i["id"] for i in ascending["data"]][:2] == ["msg_abc_in0", "fc_abc_in1"]
    for bad, param in (({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"), ({"order": "up"}, "order")):
        with pytest.raises(GatewayError) as caught:
            response_items.parse_query(bad)
        assert caught.value.param == param
    with pytest.raises(GatewayError) as caught:
        response_items.items_page("resp_abc", items, response_items.parse_query({"after": "msg_other"}))
    assert caught.value.param == "after"
    assert response_items.cannot_cancel().message == "Cannot cancel a synchronous response."
