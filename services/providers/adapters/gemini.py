"""Google Gemini API: POST {base}/v1beta/models/{model}:generateContent, and
:streamGenerateContent?alt=sse for streams (base https://generativelanguage.googleapis.com).

Wire format: https://ai.google.dev/api/generate-content. Key in `x-goog-api-key`. Turns are
`contents` with roles user/model and `parts` (text, inlineData, fileData, functionCall,
functionResponse); the system prompt is `systemInstruction`; sampling goes in
`generationConfig`. A stream is `data:` lines, each a whole GenerateContentResponse, with no
end marker: the last one carries `finishReason`, and `usageMetadata` is cumulative.
Completion tokens include `thoughtsTokenCount` (thinking is billed as output).
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import quote

from switchyard import reasoning
from switchyard.catalog import Deployment
from switchyard.errors import ErrorCode, GatewayError
from switchyard.settings import Settings
from switchyard.v1 import invoke_pb2
from switchyard.vocab import FinishReason

from ..content import (
    MessageAssembler,
    forced_tool_name,
    image_of,
    json_text,
    parse_json,
    parse_json_object,
    response_format,
    system_text,
    text_of,
    tool_choice,
)
from ..embeddings import gemini_embedding_request, is_embedding, parse_gemini_embeddings
from ..http_errors import error_from_stream_event
from ..sse import SSEEvent
from ..upstream import HttpAdapter, HttpOptions, StreamTranslator, json_event
from .base import AdapterOptions, Completed, Progress
from .openai import join_url

FINISH_REASONS = {
    "STOP": FinishReason.STOP,
    "MAX_TOKENS": FinishReason.LENGTH,
    "SAFETY": FinishReason.CONTENT_FILTER,
    "RECITATION": FinishReason.CONTENT_FILTER,
    "BLOCKLIST": FinishReason.CONTENT_FILTER,
    "PROHIBITED_CONTENT": FinishReason.CONTENT_FILTER,
    "SPII": FinishReason.CONTENT_FILTER,
    "IMAGE_SAFETY": FinishReason.CONTENT_FILTER,
    "MALFORMED_FUNCTION_CALL": FinishReason.ERROR,
    "UNEXPECTED_TOOL_CALL": FinishReason.ERROR,
    "OTHER": FinishReason.STOP,
    "LANGUAGE": FinishReason.CONTENT_FILTER,
}


def _parts(message: invoke_pb2.Message) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for part in message.content:
        if part.HasField("image"):
            image = image_of(part.image)
            if image.url:
                parts.append({"fileData": {"mimeType": image.media_type, "fileUri": image.url}})
            else:
                parts.append({"inlineData": {"mimeType": image.media_type, "data": image.data_b64}})
        elif part.text:
            parts.append({"text": part.text})
    return parts


def gemini_contents(request: invoke_pb2.InvokeRequest) -> list[dict[str, Any]]:
    """Neutral turns -> Gemini contents. A tool result needs its function's name, which the
    neutral tool turn only references by call id: it is looked up from the assistant turns."""
    names = {c.id: c.name for m in request.messages for c in m.tool_calls}
    contents: list[dict[str, Any]] = []

    def add(role: str, parts: list[dict[str, Any]]) -> None:
        if not parts:
            return
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})

    for m in request.messages:
        if m.role == invoke_pb2.ROLE_SYSTEM:
            continue
        if m.role == invoke_pb2.ROLE_TOOL:
            name = m.name or names.get(m.tool_call_id, "")
            if not name:
                raise GatewayError(
                    ErrorCode.INVALID_REQUEST,
                    f"tool result {m.tool_call_id!r} answers no earlier tool call (Gemini needs the name)",
                )
            text = text_of(m)
            try:
                result = parse_json_object(text, "tool result")
            except GatewayError:
                result = {"content": text}
            add("user", [{"functionResponse": {"name": name, "response": result}}])
        elif m.role == invoke_pb2.ROLE_ASSISTANT:
            parts = _parts(m)
            for call in m.tool_calls:
                parts.append(
                    {
                        "functionCall": {
                            "name": call.name,
                            "args": parse_json_object(
                                call.arguments_json, f"arguments of tool call {call.id}"
                            ),
                        }
                    }
                )
            add("model", parts)
        else:
            add("user", _parts(m))
    return contents


def gemini_tool_config(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice in ("auto", "none", "required"):
        mode = {"auto": "AUTO", "none": "NONE", "required": "ANY"}[choice]
        return {"functionCallingConfig": {"mode": mode}}
    name = forced_tool_name(choice)
    if name:
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    raise GatewayError(ErrorCode.INVALID_REQUEST, f"unsupported tool_choice {choice!r}", param="tool_choice")


def gemini_request(
    request: invoke_pb2.InvokeRequest, model: str = "", model_reasons: bool = False
) -> dict[str, Any]:
    body: dict[str, Any] = {"contents": gemini_contents(request)}
    system = system_text(request)
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    if request.tools:
        body["tools"] = [
            {
                "functionDeclarations": [
                    {
                        "name": t.name,
                        "description": t.description,
                        # Full JSON Schema (the older `parameters` field takes an OpenAPI subset).
                        "parametersJsonSchema": parse_json(
                            t.parameters_json or "{}", f"parameters of tool {t.name}"
                        ),
                    }
                    for t in request.tools
                ]
            }
        ]
    config = gemini_tool_config(tool_choice(request))
    if config is not None:
        body["toolConfig"] = config
    generation: dict[str, Any] = {}
    if request.HasField("temperature"):
        generation["temperature"] = request.temperature
    if request.HasField("top_p"):
        generation["topP"] = request.top_p
    if request.max_tokens:
        generation["maxOutputTokens"] = request.max_tokens
    if request.stop:
        generation["stopSequences"] = list(request.stop)
    if request.HasField("seed"):
        generation["seed"] = request.seed
    fmt = response_format(request)
    if fmt and fmt.get("type") in ("json_object", "json_schema"):
        generation["responseMimeType"] = "application/json"
        schema = (fmt.get("json_schema") or {}).get("schema")
        if schema:
            generation["responseJsonSchema"] = schema
    if model_reasons and reasoning.asked(request):
        thinking = reasoning.gemini_thinking_config(request.reasoning, model)
        if thinking is not None:
            generation["thinkingConfig"] = thinking
    if generation:
        body["generationConfig"] = generation
    return body


def gemini_usage(raw: dict[str, Any] | None) -> invoke_pb2.Usage:
    """Gemini usage -> neutral: promptTokenCount includes the cached content (read at the cached
    rate); thinking (thoughtsTokenCount) is billed as output, so it joins completion_tokens and
    is also its reasoning_tokens."""
    raw = raw or {}
    thoughts = int(raw.get("thoughtsTokenCount") or 0)
    return invoke_pb2.Usage(
        prompt_tokens=int(raw.get("promptTokenCount") or 0),
        completion_tokens=int(raw.get("candidatesTokenCount") or 0) + thoughts,
        cached_tokens=int(raw.get("cachedContentTokenCount") or 0),
        reasoning_tokens=thoughts,
    )


def finish_reason(raw: str | None, has_tool_calls: bool) -> str:
    if has_tool_calls and raw in (None, "", "STOP"):
        return FinishReason.TOOL_CALLS  # Gemini says STOP after a function call
    return FINISH_REASONS.get(raw or "STOP", FinishReason.STOP)


def _candidate(payload: dict[str, Any]) -> dict[str, Any] | None:
    candidates = payload.get("candidates") or []
    return candidates[0] if candidates else None


def _call_id(call: dict[str, Any], index: int) -> str:
    return str(call.get("id") or f"call_{index}_{call.get('name', '')}")


def parse_gemini_response(payload: dict[str, Any], provider: str) -> Completed:
    if isinstance(payload.get("error"), dict):
        raise error_from_stream_event(provider, payload)
    assembler = MessageAssembler()
    candidate = _candidate(payload)
    raw_finish = None
    if candidate is None:
        blocked = (payload.get("promptFeedback") or {}).get("blockReason")
        if not blocked:
            raise GatewayError(
                ErrorCode.UPSTREAM_ERROR, f"{provider} answered with no candidates", provider=provider
            )
        raw_finish = "SAFETY"
    else:
        _feed_parts(assembler, candidate)
        raw_finish = candidate.get("finishReason")
    return Completed(
        message=assembler.message(),
        finish_reason=finish_reason(raw_finish, assembler.has_tool_calls),
        usage=gemini_usage(payload.get("usageMetadata")),
    )


def _feed_parts(assembler: MessageAssembler, candidate: dict[str, Any]) -> list[invoke_pb2.Chunk]:
    chunks = []
    for part in (candidate.get("content") or {}).get("parts") or []:
        if part.get("thought"):
            continue  # thought summaries are not the answer
        if part.get("text"):
            chunks.append(assembler.text_chunk(part["text"]))
        elif "functionCall" in part:
            call = part["functionCall"] or {}
            index = len(assembler.calls)
            chunks.append(
                assembler.tool_chunk(
                    index,
                    id=_call_id(call, index),
                    name=str(call.get("name") or ""),
                    arguments=json_text(call.get("args") or {}),
                )
            )
    return chunks


class GeminiStream:
    """Gemini `alt=sse` events (each a GenerateContentResponse) -> neutral chunks. Pure.

    The stream has no end marker: it is complete when a candidate carried a finishReason and
    the connection then closed; a close before any finishReason is a cut stream.
    """

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.assembler = MessageAssembler()
        self.usage = invoke_pb2.Usage()
        self.finish: str | None = None
        self.blocked = False
        self.done = False  # read to the end of the stream: usage may follow the finishReason

    def feed(self, event: SSEEvent) -> list[invoke_pb2.Chunk | Progress]:
        payload = json_event(event, self.provider)
        if isinstance(payload.get("error"), dict):
            raise error_from_stream_event(self.provider, payload)
        out: list[invoke_pb2.Chunk | Progress] = []
        candidate = _candidate(payload)
        if candidate is not None:
            out.extend(_feed_parts(self.assembler, candidate))
            if candidate.get("finishReason"):
                self.finish = candidate["finishReason"]
        elif (payload.get("promptFeedback") or {}).get("blockReason"):
            self.blocked = True
            self.finish = "SAFETY"
        if payload.get("usageMetadata"):
            self.usage = gemini_usage(payload["usageMetadata"])
            out.append(Progress(self.usage))
        return out

    def result(self) -> Completed:
        if self.finish is None:
            raise GatewayError(
                ErrorCode.UPSTREAM_ERROR,
                f"{self.provider} stream ended before a finishReason (connection cut)",
                provider=self.provider,
            )
        return Completed(
            message=self.assembler.message(),
            finish_reason=finish_reason(self.finish, self.assembler.has_tool_calls),
            usage=self.usage,
        )


class GeminiOptions(HttpOptions):
    api_version: str = "v1beta"


class Adapter(HttpAdapter):
    """Gemini generateContent; deployment options in `GeminiOptions`."""

    options_model: ClassVar[type[AdapterOptions]] = GeminiOptions
    options: GeminiOptions

    def __init__(self, deployment: Deployment, settings: Settings) -> None:
        super().__init__(deployment, settings)
        version = self.options.api_version
        base = join_url(
            deployment.base_url or "https://generativelanguage.googleapis.com",
            f"/{version}/models/{quote(deployment.model, safe='')}",
        )
        self._urls = {False: f"{base}:generateContent", True: f"{base}:streamGenerateContent?alt=sse"}
        self._embed_url = f"{base}:batchEmbedContents"
        self._headers = {"x-goog-api-key": deployment.api_key} if deployment.api_key else {}
        self._reasons = reasoning.reasons("gemini", deployment.model, self.options.reasoning)

    def url(self, request: invoke_pb2.InvokeRequest, stream: bool) -> str:
        return self._embed_url if is_embedding(request) else self._urls[stream]

    def headers(self) -> dict[str, str]:
        return self._headers

    def body(self, request: invoke_pb2.InvokeRequest, stream: bool) -> dict[str, Any]:
        if is_embedding(request):
            return gemini_embedding_request(request, self.deployment.model)
        return gemini_request(request, self.deployment.model, self._reasons)

    def parse_response(self, request: invoke_pb2.InvokeRequest, payload: dict[str, Any]) -> Completed:
        if is_embedding(request):
            return parse_gemini_embeddings(payload, request, self.provider)
        return parse_gemini_response(payload, self.provider)

    def stream_translator(self, request: invoke_pb2.InvokeRequest) -> StreamTranslator:
        return GeminiStream(self.provider)
