"""OpenAI's Responses API (POST {base}/responses), for requests that came in on it. Pure.

A request from the gateway's own `/v1/responses` carries the caller's body in the contract
(`InvokeRequest.responses_json`: the whole conversation as `input`, no `previous_response_id`,
`store: false`, set by the ingress). An OpenAI deployment sends that body to its upstream's
/responses with only `model` (the deployment's) and `stream` replaced, so every field OpenAI
knows reaches it as the caller wrote it; other adapters translate the contract's messages as for
any chat request. What comes back is mapped onto the contract like any answer: the message's
text and function calls, the finish reason from `status` / `incomplete_details`, and the usage
(cached and reasoning tokens included) from `usage`, so billing, the ledger and the ingress's own
Responses rendering are the same whichever path answered.

Wire format: https://platform.openai.com/docs/api-reference/responses (create, the response
object) and .../responses-streaming (typed events: `response.output_text.delta`,
`response.output_item.added`, `response.function_call_arguments.delta`, `response.completed`
with the usage, `response.incomplete`, `response.failed`, `error`).
"""

from __future__ import annotations

from typing import Any

import orjson

from switchyard.errors import CODES, ErrorCode, GatewayError
from switchyard.tokens import estimate_prompt_tokens
from switchyard.v1 import invoke_pb2
from switchyard.vocab import FinishReason

from ..content import MessageAssembler
from ..http_errors import error_from_stream_event
from ..sse import SSEEvent
from ..upstream import json_event
from .base import Completed, Progress

PATH = "/responses"

# A failed response's / error event's code -> the error type error_from_stream_event maps.
_ERROR_TYPES = {
    CODES[ErrorCode.RATE_LIMITED].openai.code: "rate_limit_error",  # OpenAI's own code (errors.py)
    "server_error": "api_error",
    "invalid_prompt": "invalid_request_error",
    "vector_store_timeout": "api_error",
}


def responses_body(
    request: invoke_pb2.InvokeRequest, model: str, stream: bool, model_reasons: bool = True
) -> dict[str, Any]:
    """The caller's Responses body with the deployment's model and this call's stream flag; a
    `reasoning` control only when the model reasons (others refuse the parameter)."""
    body = orjson.loads(request.responses_json)
    if not isinstance(body, dict):
        raise GatewayError(ErrorCode.INTERNAL, "the Responses body in the request is not an object")
    body["model"] = model
    if not model_reasons:
        body.pop("reasoning", None)
    if stream:
        body["stream"] = True
    else:
        body.pop("stream", None)
        body.pop("stream_options", None)
    return body


def responses_usage(raw: dict[str, Any] | None) -> invoke_pb2.Usage:
    """Responses usage -> neutral: cached tokens are part of input_tokens, reasoning tokens part
    of output_tokens (as in the contract); OpenAI caches by itself, so there are no writes."""
    raw = raw or {}
    details = raw.get("input_tokens_details") or {}
    output_details = raw.get("output_tokens_details") or {}
    return invoke_pb2.Usage(
        prompt_tokens=int(raw.get("input_tokens") or 0),
        completion_tokens=int(raw.get("output_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0),
        reasoning_tokens=int(output_details.get("reasoning_tokens") or 0),
    )


def failure(provider: str, error: Any) -> GatewayError:
    """A failed response's `error` or an `error` event, as a neutral error."""
    err = error if isinstance(error, dict) else {}
    code = str(err.get("code") or err.get("type") or "server_error")
    kind = _ERROR_TYPES.get(code, "api_error")
    return error_from_stream_event(provider, {"error": {"type": kind, "message": err.get("message") or code}})


def _finish(response: dict[str, Any], has_tool_calls: bool) -> str:
    if response.get("status") == "incomplete":
        reason = (response.get("incomplete_details") or {}).get("reason")
        return FinishReason.CONTENT_FILTER if reason == "content_filter" else FinishReason.LENGTH
    return FinishReason.TOOL_CALLS if has_tool_calls else FinishReason.STOP


def _message_text(item: dict[str, Any]) -> str:
    parts = item.get("content") or []
    return "".join(
        str(p.get("text") if p.get("type") == "output_text" else p.get("refusal") or "")
        for p in parts
        if isinstance(p, dict)
    )


def parse_responses_response(payload: dict[str, Any], provider: str) -> Completed:
    """A `response` object -> Completed: text of its message items, one tool call per
    function_call item (reasoning items are not part of the neutral answer; their tokens are)."""
    if isinstance(payload.get("error"), dict) and payload.get("object") != "response":
        raise error_from_stream_event(provider, payload)
    if payload.get("status") == "failed":
        raise failure(provider, payload.get("error"))
    message = invoke_pb2.Message(role=invoke_pb2.ROLE_ASSISTANT)
    text = ""
    for item in payload.get("output") or []:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message":
            text += _message_text(item)
        elif item.get("type") == "function_call":
            message.tool_calls.add(
                id=str(item.get("call_id") or ""),
                name=str(item.get("name") or ""),
                arguments_json=str(item.get("arguments") or "{}"),
            )
    if text:
        message.content.add(text=text)
    return Completed(
        message=message,
        finish_reason=_finish(payload, bool(message.tool_calls)),
        usage=responses_usage(payload.get("usage")),
    )


class ResponsesStream:
    """Responses streaming events -> neutral chunks; the usage and finish come with
    `response.completed` (or `response.incomplete`). Pure."""

    def __init__(self, provider: str, request: invoke_pb2.InvokeRequest) -> None:
        self.provider = provider
        self.request = request
        self.assembler = MessageAssembler()
        self._calls: dict[int, int] = {}  # output_index -> the contract's tool-call index
        self._final: dict[str, Any] | None = None
        self.done = False  # the terminal event arrived

    def _call_index(self, output_index: int) -> int:
        return self._calls.setdefault(output_index, len(self._calls))

    def feed(self, event: SSEEvent) -> list[invoke_pb2.Chunk | Progress]:
        payload = json_event(event, self.provider)
        kind = str(payload.get("type") or event.event or "")
        if kind == "error":
            raise failure(self.provider, payload)
        if kind == "response.failed":
            raise failure(self.provider, (payload.get("response") or {}).get("error"))
        if kind in ("response.output_text.delta", "response.refusal.delta") and payload.get("delta"):
            return [self.assembler.text_chunk(str(payload["delta"]))]
        if kind == "response.output_item.added":
            item = payload.get("item") or {}
            if item.get("type") == "function_call":
                index = self._call_index(int(payload.get("output_index") or 0))
                # Arguments are usually "" here and follow as deltas; a call announced whole has them.
                return [
                    self.assembler.tool_chunk(
                        index,
                        id=str(item.get("call_id") or ""),
                        name=str(item.get("name") or ""),
                        arguments=str(item.get("arguments") or ""),
                    )
                ]
            return []
        if kind == "response.function_call_arguments.delta" and payload.get("delta"):
            index = self._call_index(int(payload.get("output_index") or 0))
            return [self.assembler.tool_chunk(index, arguments=str(payload["delta"]))]
        if kind in ("response.completed", "response.incomplete"):
            self._final = payload.get("response") or {}
            self.done = True
            return [Progress(responses_usage(self._final.get("usage")))]
        return []

    def result(self) -> Completed:
        if self._final is None:
            raise GatewayError(
                ErrorCode.UPSTREAM_ERROR,
                f"{self.provider} stream ended before response.completed (connection cut)",
                provider=self.provider,
            )
        usage = self._final.get("usage")
        usage_pb = (
            responses_usage(usage)
            if usage
            else invoke_pb2.Usage(
                prompt_tokens=estimate_prompt_tokens(self.request),
                completion_tokens=self.assembler.output_tokens_estimate(),
            )
        )
        message = self.assembler.message()
        return Completed(
            message=message, finish_reason=_finish(self._final, bool(message.tool_calls)), usage=usage_pb
        )
