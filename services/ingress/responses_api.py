"""The OpenAI Responses API (`POST /v1/responses`): body <-> contract, answers and stream events. Pure.

A Responses body becomes the same InvokeRequest a chat completion makes (so routing, failover,
budgets, quotas, the ledger and traces treat both alike); any provider answers it, through its
usual chat translation. The final answer becomes a `response` object, a stream becomes the
typed events of OpenAI's reference (`response.created` ... `response.completed`), and errors
take OpenAI's shape (openai_api.error_body). What the gateway keeps between requests (`store`,
`previous_response_id`) is in response_store.py; this module only turns stored items back into
messages. Not translated (built-in tools, `background`, `conversation`, file inputs) is refused
with a 400 naming the field; see docs/api.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, model_validator

from switchyard import choices
from switchyard.errors import CODES, ErrorCode, GatewayError, spec_for
from switchyard.v1 import invoke_pb2
from switchyard.vocab import Api, FinishReason, finish_reason_text

from .api_kit import (
    EffortName,
    GatewayInfo,
    Parsed,
    StrategyField,
    StreamRenderer,
    copy_sampling,
    gateway_json,
    set_reasoning,
    set_strategy_and_metadata,
    sse,
    text_of,
)
from .native import MAX_MESSAGES
from .openai_api import error_body
from .validation import parse_json_body

MAX_METADATA_PAIRS = 16  # OpenAI's bound on `metadata`

# ---------------------------------------------------------------------------------------------
# Request


class _In(BaseModel):
    # Unknown fields are ignored: newer SDKs send fields this build does not know, and items
    # echoed back from an earlier response carry ids, statuses and annotations.
    model_config = ConfigDict(extra="ignore")


class InputText(_In):
    type: Literal["input_text"]
    text: str


class InputImage(_In):
    type: Literal["input_image"]
    image_url: str | None = Field(None, min_length=1)
    file_id: str | None = None
    detail: Literal["auto", "low", "high"] | None = None

    @model_validator(mode="after")
    def _by_url(self) -> InputImage:
        if not self.image_url:
            raise ValueError("input_image needs an image_url (https: or data:); file_id is not supported")
        return self


class InputFile(_In):
    """Accepted by the model only to refuse it by name (files are not translated)."""

    type: Literal["input_file"]

    @model_validator(mode="after")
    def _refused(self) -> InputFile:
        raise ValueError("input_file parts are not supported by this gateway")


class OutputText(_In):
    type: Literal["output_text"]
    text: str


class Refusal(_In):
    type: Literal["refusal"]
    refusal: str


InputPart = Annotated[InputText | InputImage | InputFile, Field(discriminator="type")]
AnyPart = Annotated[InputText | InputImage | InputFile | OutputText | Refusal, Field(discriminator="type")]


class MessageItem(_In):
    """A message, given in full (`type: "message"`) or as OpenAI's "easy" form (no type)."""

    type: Literal["message"] | None = None
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[AnyPart]


class FunctionCallItem(_In):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str


class FunctionCallOutputItem(_In):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[InputPart]


def _item_kind(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("type") or "message")
    return str(getattr(value, "type", None) or "message")


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")],
    Discriminator(
        _item_kind,
        custom_error_type="unsupported_item",
        custom_error_message=(
            "input items must be messages, function_call or function_call_output items "
            "(other item types are not supported by this gateway)"
        ),
    ),
]


class FunctionTool(_In):
    type: Literal["function"]
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


def _tool_kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return "function" if kind == "function" else "builtin"


class BuiltinTool(_In):
    """Any tool but a function (web_search, file_search, code_interpreter, mcp, ...): refused."""

    # The description says what is refused, and a function tool is not one of them.
    model_config = ConfigDict(
        extra="ignore", json_schema_extra={"not": {"properties": {"type": {"const": "function"}}}}
    )

    type: str

    @model_validator(mode="after")
    def _refused(self) -> BuiltinTool:
        raise ValueError(
            f"built-in tool {self.type!r} is not supported by this gateway: only function tools are"
        )


ToolIn = Annotated[
    Annotated[FunctionTool, Tag("function")] | Annotated[BuiltinTool, Tag("builtin")],
    Discriminator(_tool_kind),
]


class NamedFunctionChoice(_In):
    type: Literal["function"]
    name: str = Field(min_length=1)


class TextFormatText(_In):
    type: Literal["text"]


class TextFormatJsonObject(_In):
    type: Literal["json_object"]


class TextFormatJsonSchema(_In):
    type: Literal["json_schema"]
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None


TextFormat = Annotated[
    TextFormatText | TextFormatJsonObject | TextFormatJsonSchema, Field(discriminator="type")
]


class TextConfig(_In):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningConfig(_In):
    effort: EffortName | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None


def _one_message(value: Any) -> Any:
    """A string input is one user message (so a bad item list is reported as items, not as
    "not a string" first)."""
    return [{"type": "message", "role": "user", "content": value}] if isinstance(value, str) else value


class ResponsesRequest(_In):
    """POST /v1/responses. Fields not listed are accepted and ignored; `strategy` is a
    Switchyard extension (see docs/api.md)."""

    model: str = Field(min_length=1, max_length=256)
    input: Annotated[
        list[InputItem], BeforeValidator(_one_message, json_schema_input_type=str | list[InputItem])
    ] = Field(min_length=1)
    instructions: str | None = None
    tools: list[ToolIn] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedFunctionChoice | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    max_output_tokens: int | None = Field(None, ge=1, le=1_000_000)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    reasoning: ReasoningConfig | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    previous_response_id: str | None = Field(None, min_length=1, max_length=128)
    stream: bool | None = None
    user: str | None = None
    background: bool | None = Field(None, description="Not supported: must be false or absent.")
    conversation: Any = Field(None, description="Not supported: use previous_response_id.")
    strategy: StrategyField | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ResponsesRequest:
        if len(self.input) > MAX_MESSAGES:
            raise ValueError(f"at most {MAX_MESSAGES} input items")
        if self.background:
            raise ValueError("background responses are not supported by this gateway")
        if self.conversation is not None:
            raise ValueError("conversation is not supported by this gateway: use previous_response_id")
        if self.metadata is not None and len(self.metadata) > MAX_METADATA_PAIRS:
            raise ValueError(f"metadata holds at most {MAX_METADATA_PAIRS} pairs")
        return self

    @property
    def stores(self) -> bool:
        """OpenAI stores a response unless told not to; so does the gateway."""
        return self.store is not False


def parse_body(raw: bytes, max_depth: int = 64) -> ResponsesRequest:
    return parse_json_body(raw, ResponsesRequest, strict=True, max_depth=max_depth)


def input_items(body: ResponsesRequest) -> list[dict[str, Any]]:
    """The body's input as item JSON (a string is one user message): what a stored response
    keeps, and what a follow-up replays."""
    return [_item_json(item) for item in body.input]


def _item_json(item: MessageItem | FunctionCallItem | FunctionCallOutputItem) -> dict[str, Any]:
    data = item.model_dump(by_alias=True, exclude_none=True)
    if isinstance(item, MessageItem):
        data["type"] = "message"
    return data


_ROLES = {
    "user": invoke_pb2.ROLE_USER,
    "assistant": invoke_pb2.ROLE_ASSISTANT,
    "system": invoke_pb2.ROLE_SYSTEM,
    "developer": invoke_pb2.ROLE_SYSTEM,
}


def _add_parts(message: invoke_pb2.Message, content: str | Sequence[AnyPart]) -> None:
    """Text and image parts; empty text is dropped (an assistant turn that said nothing but
    called tools has an empty text part, which providers such as Anthropic refuse)."""
    for part in [content] if isinstance(content, str) else content:
        if isinstance(part, InputImage):
            message.content.add(
                image=invoke_pb2.ImagePart(url=part.image_url or "", detail=part.detail or "")
            )
            continue
        if isinstance(part, str):
            text = part
        elif isinstance(part, Refusal):
            text = part.refusal
        elif isinstance(part, InputFile):  # never validates; here for the type checker
            continue
        else:
            text = part.text
        if text:
            message.content.add(text=text)


def messages_of(
    items: Sequence[MessageItem | FunctionCallItem | FunctionCallOutputItem],
) -> list[invoke_pb2.Message]:
    """Input items as contract messages. Function calls join the assistant turn before them
    (providers such as Anthropic want one assistant turn holding every call); each output is a
    tool message answering its call."""
    out: list[invoke_pb2.Message] = []
    for item in items:
        if isinstance(item, MessageItem):
            message = invoke_pb2.Message(role=_ROLES[item.role])
            _add_parts(message, item.content)
            if message.content or message.role != invoke_pb2.ROLE_ASSISTANT:
                out.append(message)
        elif isinstance(item, FunctionCallItem):
            last = out[-1] if out else None
            if last is None or last.role != invoke_pb2.ROLE_ASSISTANT:
                last = invoke_pb2.Message(role=invoke_pb2.ROLE_ASSISTANT)
                out.append(last)
            last.tool_calls.add(id=item.call_id, name=item.name, arguments_json=item.arguments)
        else:
            message = invoke_pb2.Message(role=invoke_pb2.ROLE_TOOL, tool_call_id=item.call_id)
            _add_parts(message, item.output)
            out.append(message)
    return out


class _Items(BaseModel):
    items: list[InputItem]


def replayed_messages(items: list[dict[str, Any]]) -> list[invoke_pb2.Message]:
    """Stored item JSON (a response's input and output items) as contract messages."""
    return messages_of(_Items.model_validate({"items": items}).items)


def to_request(body: ResponsesRequest) -> invoke_pb2.InvokeRequest:
    """The validated body as the bus contract, without the history of `previous_response_id`
    (the ingress splices that in after `instructions`: see with_history)."""
    request = invoke_pb2.InvokeRequest(model=body.model, stream=bool(body.stream), api=Api.RESPONSES)
    if body.instructions:
        request.messages.add(role=invoke_pb2.ROLE_SYSTEM).content.add(text=body.instructions)
    request.messages.extend(messages_of(body.input))
    for tool in body.tools or []:
        assert isinstance(tool, FunctionTool)  # BuiltinTool never validates
        request.tools.add(
            name=tool.name,
            description=tool.description or "",
            parameters_json=orjson.dumps(tool.parameters or {"type": "object", "properties": {}}).decode(),
        )
    if body.tool_choice is not None:
        choice = (
            body.tool_choice
            if isinstance(body.tool_choice, str)
            else {"type": "function", "function": {"name": body.tool_choice.name}}
        )
        request.tool_choice.CopyFrom(choices.tool_choice_from_json(choice))
    fmt = body.text.format if body.text else None
    if isinstance(fmt, TextFormatJsonObject):
        request.response_format.type = invoke_pb2.ResponseFormat.TYPE_JSON_OBJECT
    elif isinstance(fmt, TextFormatJsonSchema):
        spec = {"name": fmt.name, "schema": fmt.schema_, "description": fmt.description, "strict": fmt.strict}
        typed = choices.response_format_from_json({"type": "json_schema", "json_schema": spec})
        if typed is not None:
            request.response_format.CopyFrom(typed)
    copy_sampling(request, max_tokens=body.max_output_tokens, temperature=body.temperature, top_p=body.top_p)
    set_reasoning(request, body.reasoning.effort if body.reasoning else None)
    set_strategy_and_metadata(request, body.strategy, body.metadata)
    if body.user:
        request.metadata.setdefault("user", body.user)
    return request


def with_history(
    request: invoke_pb2.InvokeRequest, history: Sequence[invoke_pb2.Message], has_instructions: bool
) -> None:
    """Put a previous response's conversation between this request's instructions (which are
    not carried over, as in OpenAI's API) and its new input."""
    current = list(request.messages)
    head = 1 if has_instructions else 0
    del request.messages[:]
    request.messages.extend([*current[:head], *history, *current[head:]])


# Fields the gateway answers itself (its own store, streaming to the client) or that are its own
# extensions: never sent upstream on the native pass-through.
_GATEWAY_FIELDS = ("strategy", "previous_response_id", "stream", "store", "background", "conversation")


def native_json(raw: dict[str, Any], items: list[dict[str, Any]]) -> str:
    """The body an OpenAI deployment sends to its upstream's /responses (InvokeRequest.
    responses_json): the caller's fields as sent, the whole conversation as `input` (the
    gateway keeps the state, so nothing refers to OpenAI's), `store: false`. Items lose their
    `id` and `status`: ids name items in a store the upstream does not have."""
    body = {key: value for key, value in raw.items() if key not in _GATEWAY_FIELDS}
    body["input"] = [{k: v for k, v in item.items() if k not in ("id", "status")} for item in items]
    body["store"] = False
    return orjson.dumps(body).decode()


@dataclass(frozen=True)
class ParsedResponses(Parsed):
    """A Responses body as the contract, plus what its answer echoes and what it stores."""

    body: ResponsesRequest | None = None
    # The whole conversation's input items up to this request (a previous response's, then
    # this body's): set by the ingress once the previous response is read.
    items: list[dict[str, Any]] = field(default_factory=list)
    # The body as the caller sent it (every field, known here or not), for the native pass-through.
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def validated(self) -> ResponsesRequest:
        assert self.body is not None  # always set by ResponsesApi.parse
        return self.body


# ---------------------------------------------------------------------------------------------
# Response


def response_id(request_id: str) -> str:
    return "resp_" + request_id.removeprefix("req_")


def message_id(request_id: str, index: int) -> str:
    return f"msg_{request_id.removeprefix('req_')}_{index}"


def call_item_id(request_id: str, index: int) -> str:
    return f"fc_{request_id.removeprefix('req_')}_{index}"


def usage_json(usage: invoke_pb2.Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def _text_format_json(fmt: TextFormat | None) -> dict[str, Any]:
    if fmt is None:
        return {"type": "text"}
    return fmt.model_dump(by_alias=True, exclude_none=True)


def _tools_json(body: ResponsesRequest) -> list[dict[str, Any]]:
    out = []
    for tool in body.tools or []:
        assert isinstance(tool, FunctionTool)
        out.append(
            {
                "type": "function",
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.parameters,
                "strict": True if tool.strict is None else tool.strict,
            }
        )
    return out


def _tool_choice_json(body: ResponsesRequest) -> Any:
    choice = body.tool_choice
    if choice is None:
        return "auto"
    return choice if isinstance(choice, str) else {"type": "function", "name": choice.name}


def message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def output_items(
    request_id: str, message: invoke_pb2.Message, status: str = "completed"
) -> list[dict[str, Any]]:
    """A final message as output items: its text as one message item, then one function_call
    item per tool call (the order OpenAI's models produce them in)."""
    items = []
    text = text_of(message)
    if text or not message.tool_calls:
        items.append(message_item(message_id(request_id, 0), text, status))
    for call in message.tool_calls:  # ids by output index, as the stream numbers them
        item_id = call_item_id(request_id, len(items))
        items.append(call_item(item_id, call.id, call.name, call.arguments_json, status))
    return items


# FinishReason -> (status, incomplete_details.reason): a length or filter stop is "incomplete".
_INCOMPLETE = {FinishReason.LENGTH: "max_output_tokens", FinishReason.CONTENT_FILTER: "content_filter"}


def status_of(finish_reason: str) -> tuple[str, dict[str, str] | None]:
    reason = _INCOMPLETE.get(FinishReason(finish_reason)) if finish_reason in _INCOMPLETE else None
    return ("incomplete", {"reason": reason}) if reason else ("completed", None)


def response_json(
    parsed: ParsedResponses,
    *,
    status: str,
    output: list[dict[str, Any]],
    final: invoke_pb2.InvokeResponse | None = None,
    error: GatewayError | None = None,
    incomplete: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A `response` object: in progress (no final), finished (final) or failed (error)."""
    request, body = parsed.request, parsed.validated
    out: dict[str, Any] = {
        "id": response_id(request.request_id),
        "object": "response",
        "created_at": int(request.received_unix_ms // 1000),
        "status": status,
        "background": False,
        "error": error_json(error) if error is not None else None,
        "incomplete_details": incomplete,
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "model": f"{final.provider}/{final.model}" if final is not None and final.provider else body.model,
        "output": output,
        "parallel_tool_calls": True if body.parallel_tool_calls is None else body.parallel_tool_calls,
        "previous_response_id": body.previous_response_id,
        "reasoning": {
            "effort": body.reasoning.effort if body.reasoning else None,
            "summary": body.reasoning.summary if body.reasoning else None,
        },
        "store": body.stores,
        "temperature": body.temperature,
        "text": {"format": _text_format_json(body.text.format if body.text else None)},
        "tool_choice": _tool_choice_json(body),
        "tools": _tools_json(body),
        "top_p": body.top_p,
        "truncation": "disabled",
        "usage": usage_json(final.usage) if final is not None else None,
        "user": body.user,
        "metadata": body.metadata or {},
    }
    if final is not None:
        out["completed_at"] = int((request.received_unix_ms + final.latency_ms) // 1000)
        out["switchyard"] = gateway_json(final)
    return out


def final_json(parsed: ParsedResponses, final: invoke_pb2.InvokeResponse) -> dict[str, Any]:
    """The answer of a request that did not stream."""
    status, incomplete = status_of(finish_reason_text(final.finish_reason))
    output = output_items(parsed.request.request_id, final.message)
    return response_json(parsed, status=status, output=output, final=final, incomplete=incomplete)


def error_json(error: GatewayError) -> dict[str, Any]:
    """A failed response's `error`. `code` is one of OpenAI's codes for a failed response (the
    SDK types it): a rate limit's own, else `server_error`; `type` is the OpenAI error type a
    chat completion's error has (`insufficient_quota` for a spent budget: stop, do not retry);
    the gateway's own code is in the response's `switchyard.error_code`."""
    _, kind, code = spec_for(error.code).openai
    rate_limited = code == CODES[ErrorCode.RATE_LIMITED].openai.code
    return {
        "code": code if rate_limited else "server_error",
        "message": error.message,
        "param": error.param or None,
        "type": kind,
    }


# ---------------------------------------------------------------------------------------------
# Streaming


@dataclass
class _OpenItem:
    output_index: int
    item_id: str
    kind: Literal["message", "function_call"]
    text: str = ""  # the message's text, or the call's arguments
    call_id: str = ""
    name: str = ""
    done: bool = False

    def json(self, status: str) -> dict[str, Any]:
        if self.kind == "message":
            return message_item(self.item_id, self.text, status)
        return call_item(self.item_id, self.call_id, self.name, self.text, status)


class ResponseStream(StreamRenderer):
    """Reply frames -> the typed events of a streamed response, one instance per request.

    `response.created` and `response.in_progress` open the stream; text opens a message item
    (`output_item.added`, `content_part.added`) and streams `output_text.delta`; each tool
    call opens a function_call item and streams `function_call_arguments.delta`; the final
    frame closes every open item (`*.done`, `output_item.done`) and ends with
    `response.completed` (or `response.incomplete` for a length stop) carrying the usage. An
    error after the first event ends the stream with `response.failed`, holding what was
    delivered. A provider that did not stream part of its answer has that part sent whole
    before the items close, so the assembled response is the final one.
    """

    def __init__(self, parsed: ParsedResponses) -> None:
        self._parsed = parsed
        self._request_id = parsed.request.request_id
        self._seq = 0
        self._started = False
        self._items: list[_OpenItem] = []
        self._message: _OpenItem | None = None  # the message item text goes to
        self._calls: dict[int, _OpenItem] = {}  # by the contract's tool-call index
        self.finished: dict[str, Any] | None = None  # the final response object, once sent

    def _event(self, kind: str, **data: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._seq, **data}
        self._seq += 1
        return sse(kind, payload)

    def _start(self) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        opening = response_json(self._parsed, status="in_progress", output=[])
        return [
            self._event("response.created", response=opening),
            self._event("response.in_progress", response=opening),
        ]

    def _open(
        self, kind: Literal["message", "function_call"], call_id: str = "", name: str = ""
    ) -> tuple[_OpenItem, list[bytes]]:
        index = len(self._items)
        if kind == "message":
            item = _OpenItem(index, message_id(self._request_id, index), kind)
        else:
            item = _OpenItem(index, call_item_id(self._request_id, index), kind, call_id=call_id, name=name)
        self._items.append(item)
        events = [
            self._event("response.output_item.added", output_index=index, item=item.json("in_progress"))
        ]
        if kind == "message":
            events.append(
                self._event(
                    "response.content_part.added",
                    item_id=item.item_id,
                    output_index=index,
                    content_index=0,
                    part={"type": "output_text", "text": "", "annotations": [], "logprobs": []},
                )
            )
        return item, events

    def _text(self, delta: str) -> list[bytes]:
        events: list[bytes] = []
        if self._message is None or self._message.done:
            self._message, events = self._open("message")
        self._message.text += delta
        events.append(
            self._event(
                "response.output_text.delta",
                item_id=self._message.item_id,
                output_index=self._message.output_index,
                content_index=0,
                delta=delta,
                logprobs=[],
            )
        )
        return events

    def _call(self, index: int, call_id: str, name: str, delta: str) -> list[bytes]:
        events: list[bytes] = []
        item = self._calls.get(index)
        if item is None:
            if self._message is not None and not self._message.done:
                events += self._close(self._message, "completed")
            item, opened = self._open(
                "function_call", call_id=call_id or f"call_{self._request_id}_{index}", name=name
            )
            self._calls[index] = item
            events += opened
        if delta:
            item.text += delta
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item.item_id,
                    output_index=item.output_index,
                    delta=delta,
                )
            )
        return events

    def _close(self, item: _OpenItem, status: str) -> list[bytes]:
        item.done = True
        where = {"item_id": item.item_id, "output_index": item.output_index}
        if item.kind == "message":
            part = {"type": "output_text", "text": item.text, "annotations": [], "logprobs": []}
            events = [
                self._event(
                    "response.output_text.done", **where, content_index=0, text=item.text, logprobs=[]
                ),
                self._event("response.content_part.done", **where, content_index=0, part=part),
            ]
        else:
            events = [self._event("response.function_call_arguments.done", **where, arguments=item.text)]
        events.append(
            self._event("response.output_item.done", output_index=item.output_index, item=item.json(status))
        )
        return events

    def chunk(self, chunk: invoke_pb2.Chunk) -> list[bytes]:
        events = self._start()
        if chunk.delta_text:
            events += self._text(chunk.delta_text)
        for call in chunk.tool_calls:
            events += self._call(call.index, call.id, call.name, call.arguments_delta)
        return events

    def final(self, final: invoke_pb2.InvokeResponse) -> list[bytes]:
        events = self._start()
        message = final.message
        text = text_of(message)
        if text and self._message is None:  # the provider did not stream its text
            events += self._text(text)
        if message.tool_calls and not self._calls:  # nor its tool calls
            for i, call in enumerate(message.tool_calls):
                events += self._call(i, call.id, call.name, call.arguments_json)
        if not self._items:  # an empty answer is still one (empty) message
            self._message, opened = self._open("message")
            events += opened
        status, incomplete = status_of(finish_reason_text(final.finish_reason))
        for item in self._items:
            if not item.done:
                events += self._close(item, status)
        output = [item.json(status) for item in self._items]
        self.finished = response_json(
            self._parsed, status=status, output=output, final=final, incomplete=incomplete
        )
        events.append(self._event(f"response.{status}", response=self.finished))
        return events

    def error(self, error: GatewayError) -> list[bytes]:
        events = self._start()
        output = [item.json("incomplete") for item in self._items]
        failed = response_json(self._parsed, status="failed", output=output, error=error)
        failed["switchyard"] = {"request_id": self._request_id, "error_code": str(error.code)}
        events.append(self._event("response.failed", response=failed))
        return events


# ---------------------------------------------------------------------------------------------
# The API


class ResponsesApi:
    """`POST /v1/responses` (see api_kit.HttpApi). The ingress adds what needs the bus: the
    previous response's history before publishing, storing the answer after (responses_http.py)."""

    name: str = Api.RESPONSES
    path = "/v1/responses"
    request_id_header = "x-request-id"

    def parse(self, raw: bytes, max_depth: int) -> ParsedResponses:
        body = parse_body(raw, max_depth)
        return ParsedResponses(to_request(body), body=body, items=input_items(body), raw=orjson.loads(raw))

    def render_final(
        self, request: invoke_pb2.InvokeRequest, final: invoke_pb2.InvokeResponse
    ) -> dict[str, Any]:
        # Without the body only the model can be echoed; the ingress renders with final_json
        # and the parsed body instead (responses_http.py).
        body = ResponsesRequest.model_construct(model=request.model, input=[])
        return final_json(ParsedResponses(request, body=body), final)

    def render_error(self, error: GatewayError, request_id: str) -> tuple[int, dict[str, Any]]:
        return error_body(error)

    def render_stream(self, parsed: Parsed) -> ResponseStream:
        assert isinstance(parsed, ParsedResponses)
        return ResponseStream(parsed)


def not_found(response_id_: str) -> GatewayError:
    return GatewayError(ErrorCode.NOT_FOUND, f"no response with id {response_id_!r}")


# ---------------------------------------------------------------------------------------------
# Response schemas: what the functions above produce, for the OpenAPI description (and checked
# against their output in tests, so the description stays true).


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OutputTextOut(_Out):
    type: Literal["output_text"]
    text: str
    annotations: list[Any]
    logprobs: list[Any]


ItemStatus = Literal["in_progress", "completed", "incomplete"]


class MessageItemOut(_Out):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    status: ItemStatus
    content: list[OutputTextOut]


class FunctionCallItemOut(_Out):
    id: str
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str
    status: ItemStatus


OutputItemOut = Annotated[MessageItemOut | FunctionCallItemOut, Field(discriminator="type")]


class InputTokensDetails(_Out):
    cached_tokens: int
    cache_write_tokens: int


class OutputTokensDetails(_Out):
    reasoning_tokens: int


class ResponseUsageOut(_Out):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class ResponseErrorOut(_Out):
    code: str
    message: str
    param: str | None
    type: str


class IncompleteDetailsOut(_Out):
    reason: Literal["max_output_tokens", "content_filter"]


class ReasoningOut(_Out):
    effort: str | None
    summary: str | None


class TextOut(_Out):
    format: dict[str, Any]


class FunctionToolOut(_Out):
    type: Literal["function"]
    name: str
    description: str | None
    parameters: dict[str, Any] | None
    strict: bool


class FailedInfo(_Out):
    request_id: str
    error_code: str


class ResponseObject(_Out):
    """A `response` object: the answer of POST /v1/responses, GET /v1/responses/{id}, and the
    `response` of the stream's lifecycle events (created, in_progress, completed, failed)."""

    id: str
    object: Literal["response"]
    created_at: int
    status: Literal["in_progress", "completed", "incomplete", "failed"]
    background: bool
    error: ResponseErrorOut | None
    incomplete_details: IncompleteDetailsOut | None
    instructions: str | None
    max_output_tokens: int | None
    model: str
    output: list[OutputItemOut]
    parallel_tool_calls: bool
    previous_response_id: str | None
    reasoning: ReasoningOut
    store: bool
    temperature: float | None
    text: TextOut
    tool_choice: str | dict[str, Any]
    tools: list[FunctionToolOut]
    top_p: float | None
    truncation: Literal["disabled"]
    usage: ResponseUsageOut | None
    user: str | None
    metadata: dict[str, str]
    completed_at: int | None = None
    switchyard: GatewayInfo | FailedInfo | None = None


class ResponseDeleted(_Out):
    id: str
    object: Literal["response"]
    deleted: Literal[True]
