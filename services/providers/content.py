"""Pure helpers shared by the adapters' request/response translation: images, tool arguments,
system prompts, and assembling a streamed message back into one neutral Message."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import orjson

from switchyard import choices
from switchyard.errors import ErrorCode, GatewayError
from switchyard.tokens import CHARS_PER_TOKEN
from switchyard.v1 import invoke_pb2


@dataclass(frozen=True)
class Image:
    """An image as the providers want it: either inline base64 data or a URL."""

    media_type: str = ""
    data_b64: str = ""
    url: str = ""
    detail: str = ""

    @property
    def data_url(self) -> str:
        return self.url or f"data:{self.media_type};base64,{self.data_b64}"


def image_of(part: invoke_pb2.ImagePart) -> Image:
    """Neutral ImagePart (https URL, data: URL, or raw bytes) -> Image."""
    if part.data:
        return Image(
            media_type=part.media_type or "image/png",
            data_b64=base64.b64encode(part.data).decode(),
            detail=part.detail,
        )
    url = part.url
    if url.startswith("data:"):
        header, sep, payload = url[5:].partition(",")
        if not sep or ";base64" not in header:
            raise GatewayError(
                ErrorCode.INVALID_REQUEST, "image data URLs must be base64 (data:<type>;base64,...)"
            )
        media_type = header.split(";", 1)[0] or part.media_type or "image/png"
        return Image(media_type=media_type, data_b64=payload, detail=part.detail)
    return Image(media_type=part.media_type or guess_media_type(url), url=url, detail=part.detail)


def guess_media_type(url: str) -> str:
    path = url.split("?", 1)[0].lower()
    for ext, media_type in (
        (".png", "image/png"),
        (".jpg", "image/jpeg"),
        (".jpeg", "image/jpeg"),
        (".gif", "image/gif"),
        (".webp", "image/webp"),
    ):
        if path.endswith(ext):
            return media_type
    return "image/jpeg"


def text_of(message: invoke_pb2.Message) -> str:
    return "".join(part.text for part in message.content if part.HasField("text"))


def system_text(request: invoke_pb2.InvokeRequest) -> str:
    """All system messages joined (Anthropic and Gemini take one system prompt, not turns)."""
    return "\n\n".join(
        text_of(m) for m in request.messages if m.role == invoke_pb2.ROLE_SYSTEM and text_of(m)
    )


def parse_json_object(text: str, what: str) -> dict[str, Any]:
    """Tool arguments / tool results as a JSON object, for providers that want objects."""
    if not text.strip():
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise GatewayError(ErrorCode.INVALID_REQUEST, f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise GatewayError(ErrorCode.INVALID_REQUEST, f"{what} must be a JSON object")
    return value


def json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def parse_json(text: str, what: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        raise GatewayError(ErrorCode.INVALID_REQUEST, f"{what} is not valid JSON") from None


def response_format(request: invoke_pb2.InvokeRequest) -> dict[str, Any] | None:
    """The neutral response_format (OpenAI's shape); None when unset or text."""
    if not request.HasField("response_format"):
        return None
    return choices.response_format_json(request.response_format)


def tool_choice(request: invoke_pb2.InvokeRequest) -> Any:
    """The neutral tool_choice (OpenAI's shape): "auto" | "none" | "required" |
    {"type": "function", "function": {"name": ...}}; None when unset."""
    if not request.HasField("tool_choice"):
        return None
    return choices.tool_choice_json(request.tool_choice)


def forced_tool_name(choice: Any) -> str:
    if isinstance(choice, dict):
        return str((choice.get("function") or {}).get("name") or choice.get("name") or "")
    return ""


@dataclass
class _ToolCallParts:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class MessageAssembler:
    """Collects streamed text and tool-call deltas into the final neutral Message, and numbers
    the neutral chunks. Each adapter's stream translator owns one."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, _ToolCallParts] = {}
        self.seq = 0

    def text_chunk(self, text: str) -> invoke_pb2.Chunk:
        self.text.append(text)
        chunk = invoke_pb2.Chunk(seq=self.seq, delta_text=text)
        self.seq += 1
        return chunk

    def tool_chunk(self, index: int, id: str = "", name: str = "", arguments: str = "") -> invoke_pb2.Chunk:
        call = self.calls.setdefault(index, _ToolCallParts())
        call.id = call.id or id
        call.name = call.name or name
        if arguments:
            call.arguments.append(arguments)
        chunk = invoke_pb2.Chunk(
            seq=self.seq,
            tool_calls=[invoke_pb2.ToolCallDelta(index=index, id=id, name=name, arguments_delta=arguments)],
        )
        self.seq += 1
        return chunk

    @property
    def has_tool_calls(self) -> bool:
        return bool(self.calls)

    def message(self) -> invoke_pb2.Message:
        message = invoke_pb2.Message(role=invoke_pb2.ROLE_ASSISTANT)
        text = "".join(self.text)
        if text:
            message.content.add(text=text)
        for index in sorted(self.calls):
            call = self.calls[index]
            message.tool_calls.add(id=call.id, name=call.name, arguments_json="".join(call.arguments) or "{}")
        return message

    def output_tokens_estimate(self) -> int:
        """Tokens streamed so far, estimated (for a call cut before the provider reported usage)."""
        chars = sum(len(t) for t in self.text)
        chars += sum(len(c.name) + sum(len(a) for a in c.arguments) for c in self.calls.values())
        return (chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN
