"""Reply frames as a provider worker sends them, for tests of the pure edge translations."""

from __future__ import annotations

from switchyard import units
from switchyard.v1 import invoke_pb2
from switchyard.vocab import finish_reason_value


def stamped_request(model: str = "auto", stream: bool = False) -> invoke_pb2.InvokeRequest:
    request = invoke_pb2.InvokeRequest(
        request_id="req_TEST123", model=model, stream=stream, received_unix_ms=1_700_000_000_123.456_789
    )
    request.messages.add(role=invoke_pb2.ROLE_USER).content.add(text="hello there")
    return request


def final_frame(
    text: str = "",
    tool_calls: list[tuple[str, str, str]] = (),  # type: ignore[assignment]
    finish: str = "stop",
    prompt: int = 12,
    completion: int = 5,
    cached: int = 0,
) -> invoke_pb2.Reply:
    final = invoke_pb2.InvokeResponse(
        request_id="req_TEST123",
        provider="demo",
        model="smart",
        deployment_id="demo/smart",
        route="auto",
        finish_reason=finish_reason_value(finish),
        usage=invoke_pb2.Usage(prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached),
        cost_usd="0.000081",
        latency_ms=12.5,
    )
    final.message.role = invoke_pb2.ROLE_ASSISTANT
    if text:
        final.message.content.add(text=text)
    for call_id, name, args in tool_calls:
        final.message.tool_calls.add(id=call_id, name=name, arguments_json=args)
    return invoke_pb2.Reply(final=final)


def text_chunk(seq: int, text: str) -> invoke_pb2.Reply:
    return invoke_pb2.Reply(chunk=invoke_pb2.Chunk(seq=seq, delta_text=text))


def tool_chunk(seq: int, index: int, call_id: str = "", name: str = "", args: str = "") -> invoke_pb2.Reply:
    delta = invoke_pb2.ToolCallDelta(index=index, id=call_id, name=name, arguments_delta=args)
    return invoke_pb2.Reply(chunk=invoke_pb2.Chunk(seq=seq, tool_calls=[delta]))


def error_frame(code: str, message: str = "it went wrong", retry_after_s: float = 0) -> invoke_pb2.Reply:
    return invoke_pb2.Reply(
        error=invoke_pb2.Error(
            code=code, message=message, request_id="req_TEST123", retry_after_ms=units.ms(retry_after_s)
        )
    )
