"""OpenAI Chat Completions (POST {base}/chat/completions), and the translation shared with the
APIs that copy it (Mistral, vLLM, Ollama, Groq, Together, Azure OpenAI): see `Dialect`.

Wire format: https://platform.openai.com/docs/api-reference/chat. Streaming sends `data:` chunks
(`chat.completion.chunk`) with `choices[0].delta`; with `stream_options.include_usage` one last
chunk has `choices: []` and the usage; the stream ends with `data: [DONE]`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar
from urllib.parse import urlencode

from switchyard import choices, reasoning
from switchyard.catalog import Deployment
from switchyard.errors import ErrorCode, GatewayError
from switchyard.settings import Settings
from switchyard.tokens import estimate_prompt_tokens
from switchyard.v1 import invoke_pb2
from switchyard.vocab import Api, FinishReason

from ..content import (
    MessageAssembler,
    image_of,
    json_text,
    parse_json,
    response_format,
    text_of,
    tool_choice,
)
from ..embeddings import (
    OPENAI_EMBEDDINGS,
    EmbeddingDialect,
    is_embedding,
    openai_embedding_request,
    parse_openai_embeddings,
)
from ..http_errors import error_from_stream_event
from ..sse import SSEEvent
from ..upstream import HttpAdapter, HttpOptions, StreamTranslator, json_event
from . import openai_responses
from .base import AdapterOptions, Completed, Progress


@dataclass(frozen=True)
class Dialect:
    """How one OpenAI-style API differs from OpenAI's."""

    name: str = "openai"
    path: str = "/chat/completions"
    max_tokens_field: str = "max_completion_tokens"
    seed_field: str = "seed"
    # Ask for the usage chunk at the end of a stream (OpenAI, vLLM, Groq, Ollama do it on request;
    # Mistral always sends usage on its last chunk and rejects unknown fields).
    stream_usage_option: bool = True
    required_tool_choice: str = "required"
    embeddings: EmbeddingDialect = OPENAI_EMBEDDINGS


OPENAI = Dialect()

FINISH_REASONS = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "model_length": FinishReason.LENGTH,  # Mistral: the context window ran out
    "tool_calls": FinishReason.TOOL_CALLS,
    "function_call": FinishReason.TOOL_CALLS,
    "content_filter": FinishReason.CONTENT_FILTER,
    "error": FinishReason.ERROR,
}


def finish_reason(raw: str | None, has_tool_calls: bool = False) -> str:
    if not raw:
        return FinishReason.TOOL_CALLS if has_tool_calls else FinishReason.STOP
    return FINISH_REASONS.get(raw, FinishReason.STOP)


def _content(message: invoke_pb2.Message) -> str | list[dict[str, Any]]:
    """A plain string when the message is only text (every OpenAI-style server accepts that)."""
    if not any(part.HasField("image") for part in message.content):
        return text_of(message)
    parts: list[dict[str, Any]] = []
    for part in message.content:
        if part.HasField("image"):
            image = image_of(part.image)
            url: dict[str, Any] = {"url": image.data_url}
            if image.detail:
                url["detail"] = image.detail
            parts.append({"type": "image_url", "image_url": url})
        else:
            parts.append({"type": "text", "text": part.text})
    return parts


def chat_messages(request: invoke_pb2.InvokeRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in request.messages:
        if m.role == invoke_pb2.ROLE_TOOL:
            item: dict[str, Any] = {"role": "tool", "tool_call_id": m.tool_call_id, "content": text_of(m)}
        elif m.role == invoke_pb2.ROLE_ASSISTANT:
            item = {"role": "assistant", "content": text_of(m) or None}
            if m.tool_calls:
                item["tool_calls"] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments_json or "{}"},
                    }
                    for c in m.tool_calls
                ]
        else:
            item = {"role": choices.role_name(m.role), "content": _content(m)}
        if m.name:
            item["name"] = m.name
        out.append(item)
    return out


def chat_request(
    request: invoke_pb2.InvokeRequest,
    model: str,
    stream: bool,
    dialect: Dialect = OPENAI,
    model_reasons: bool = False,
) -> dict[str, Any]:
    """The neutral request as an OpenAI-style chat completion body. `reasoning_effort` is sent
    only when the model reasons (a model that does not refuses the field)."""
    body: dict[str, Any] = {"model": model, "messages": chat_messages(request)}
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": parse_json(t.parameters_json or "{}", f"parameters of tool {t.name}"),
                },
            }
            for t in request.tools
        ]
    choice = tool_choice(request)
    if choice is not None:
        body["tool_choice"] = dialect.required_tool_choice if choice == "required" else choice
    if request.HasField("temperature"):
        body["temperature"] = request.temperature
    if request.HasField("top_p"):
        body["top_p"] = request.top_p
    if request.stop:
        body["stop"] = list(request.stop)
    if request.max_tokens:
        body[dialect.max_tokens_field] = request.max_tokens
    if request.HasField("seed"):
        body[dialect.seed_field] = request.seed
    fmt = response_format(request)
    if fmt is not None:
        body["response_format"] = fmt
    if model_reasons and reasoning.asked(request):
        effort = reasoning.openai_effort(request.reasoning, model)
        if effort is not None:
            body["reasoning_effort"] = effort
    if stream:
        body["stream"] = True
        if dialect.stream_usage_option:
            body["stream_options"] = {"include_usage": True}
    return body


def chat_usage(raw: dict[str, Any] | None) -> invoke_pb2.Usage:
    """OpenAI usage -> neutral: cached (read) tokens are part of prompt_tokens, reasoning tokens
    part of completion_tokens, as in the contract. OpenAI caches by itself: no cache writes."""
    raw = raw or {}
    details = raw.get("prompt_tokens_details") or {}
    output_details = raw.get("completion_tokens_details") or {}
    return invoke_pb2.Usage(
        prompt_tokens=int(raw.get("prompt_tokens") or 0),
        completion_tokens=int(raw.get("completion_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0),
        reasoning_tokens=int(output_details.get("reasoning_tokens") or 0),
    )


def _arguments(value: Any) -> str:
    # Mistral has returned arguments as an object; the neutral form is JSON text.
    if value is None:
        return "{}"
    return value if isinstance(value, str) else json_text(value)


def parse_chat_response(
    payload: dict[str, Any], provider: str, request: invoke_pb2.InvokeRequest | None = None
) -> Completed:
    """An OpenAI-style chat completion -> Completed."""
    if isinstance(payload.get("error"), dict):
        raise error_from_stream_event(provider, payload)
    choices = payload.get("choices") or []
    if not choices:
        raise GatewayError(
            ErrorCode.UPSTREAM_ERROR, f"{provider} answered with no choices", provider=provider
        )
    raw = choices[0].get("message") or {}
    message = invoke_pb2.Message(role=invoke_pb2.ROLE_ASSISTANT)
    content = raw.get("content")
    if isinstance(content, list):  # some servers return parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if content:
        message.content.add(text=content)
    for call in raw.get("tool_calls") or []:
        fn = call.get("function") or {}
        message.tool_calls.add(
            id=str(call.get("id") or ""),
            name=str(fn.get("name") or ""),
            arguments_json=_arguments(fn.get("arguments")),
        )
    usage = payload.get("usage")
    if usage is None and request is not None:
        # A server that reports no usage (some local ones): estimate rather than bill zero.
        text = content or ""
        usage_pb = invoke_pb2.Usage(
            prompt_tokens=estimate_prompt_tokens(request), completion_tokens=(len(text) + 3) // 4
        )
    else:
        usage_pb = chat_usage(usage)
    return Completed(
        message=message,
        finish_reason=finish_reason(choices[0].get("finish_reason"), bool(message.tool_calls)),
        usage=usage_pb,
    )


class ChatStream:
    """OpenAI-style `chat.completion.chunk` events -> neutral chunks. Pure."""

    def __init__(self, provider: str, request: invoke_pb2.InvokeRequest) -> None:
        self.provider = provider
        self.request = request
        self.assembler = MessageAssembler()
        self.finish = ""
        self.usage: invoke_pb2.Usage | None = None
        self.done = False

    def feed(self, event: SSEEvent) -> list[invoke_pb2.Chunk | Progress]:
        if event.data.strip() == "[DONE]":
            self.done = True
            return []
        payload = json_event(event, self.provider)
        if isinstance(payload.get("error"), dict):
            raise error_from_stream_event(self.provider, payload)
        out: list[invoke_pb2.Chunk | Progress] = []
        if payload.get("usage"):
            self.usage = chat_usage(payload["usage"])
            out.append(Progress(self.usage))
        for choice in payload.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                out.append(self.assembler.text_chunk(delta["content"]))
            for position, call in enumerate(delta.get("tool_calls") or []):
                fn = call.get("function") or {}
                arguments = fn.get("arguments")
                out.append(
                    self.assembler.tool_chunk(
                        int(call.get("index", position)),
                        id=str(call.get("id") or ""),
                        name=str(fn.get("name") or ""),
                        arguments=_arguments(arguments) if arguments is not None else "",
                    )
                )
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return out

    def result(self) -> Completed:
        if not self.done:
            raise GatewayError(
                ErrorCode.UPSTREAM_ERROR,
                f"{self.provider} stream ended before [DONE] (connection cut)",
                provider=self.provider,
            )
        usage = self.usage
        if usage is None:
            usage = invoke_pb2.Usage(
                prompt_tokens=estimate_prompt_tokens(self.request),
                completion_tokens=self.assembler.output_tokens_estimate(),
            )
        return Completed(
            message=self.assembler.message(),
            finish_reason=finish_reason(self.finish, self.assembler.has_tool_calls),
            usage=usage,
        )


def join_url(base: str, path: str) -> str:
    """base + path, without doubling a version segment the base already ends with."""
    base = base.rstrip("/")
    for version in ("/v1", "/v1beta"):
        if base.endswith(version) and path.startswith(version + "/"):
            path = path[len(version) :]
    return base + path


class OpenAIOptions(HttpOptions):
    """Deployment options of OpenAI-style servers (openai, mistral, openai_compat)."""

    auth_header: str = "authorization"  # Authorization: Bearer <key>; Azure: "api-key"
    query: dict[str, str | int | float | bool] = {}  # e.g. {"api-version" = "2024-10-21"}
    headers: dict[str, str] = {}  # extra headers
    stream_usage: bool | None = None  # false for a server that rejects stream_options
    # Send a request that came in on the Responses API to the upstream's /responses as the
    # caller wrote it (openai_responses.py); unset: yes for `openai`, no for servers that copy
    # only Chat Completions (mistral, openai_compat).
    responses_api: bool | None = None


class Adapter(HttpAdapter):
    """OpenAI, and (through `dialect` and deployment options, `OpenAIOptions`) any server speaking
    its API."""

    options_model: ClassVar[type[AdapterOptions]] = OpenAIOptions
    options: OpenAIOptions
    dialect: Dialect = OPENAI
    default_base_url = "https://api.openai.com/v1"

    def __init__(self, deployment: Deployment, settings: Settings) -> None:
        super().__init__(deployment, settings)
        options = self.options
        if options.stream_usage is not None:
            self.dialect = replace(self.dialect, stream_usage_option=options.stream_usage)
        base = deployment.base_url or self.default_base_url
        query = options.query
        suffix = f"?{urlencode(query)}" if query else ""
        self._url = join_url(base, self.dialect.path) + suffix
        self._embeddings_url = join_url(base, self.dialect.embeddings.path) + suffix
        self._responses_url = join_url(base, openai_responses.PATH) + suffix
        native = options.responses_api
        self._native_responses = self.dialect.name == OPENAI.name if native is None else native
        self._headers = dict(options.headers)
        self._reasons = reasoning.reasons(self.dialect.name, deployment.model, options.reasoning)
        if deployment.api_key:
            auth = options.auth_header.lower()
            self._headers[auth] = (
                f"Bearer {deployment.api_key}" if auth == "authorization" else deployment.api_key
            )

    def native_responses(self, request: invoke_pb2.InvokeRequest) -> bool:
        """A Responses API request this deployment passes through to its upstream's /responses."""
        return self._native_responses and request.api == Api.RESPONSES and bool(request.responses_json)

    def url(self, request: invoke_pb2.InvokeRequest, stream: bool) -> str:
        if is_embedding(request):
            return self._embeddings_url
        return self._responses_url if self.native_responses(request) else self._url

    def headers(self) -> dict[str, str]:
        return self._headers

    def body(self, request: invoke_pb2.InvokeRequest, stream: bool) -> dict[str, Any]:
        if is_embedding(request):
            return openai_embedding_request(request, self.deployment.model, self.dialect.embeddings)
        if self.native_responses(request):
            return openai_responses.responses_body(request, self.deployment.model, stream, self._reasons)
        return chat_request(request, self.deployment.model, stream, self.dialect, self._reasons)

    def parse_response(self, request: invoke_pb2.InvokeRequest, payload: dict[str, Any]) -> Completed:
        if is_embedding(request):
            return parse_openai_embeddings(payload, request, self.provider)
        if self.native_responses(request):
            return openai_responses.parse_responses_response(payload, self.provider)
        return parse_chat_response(payload, self.provider, request)

    def stream_translator(self, request: invoke_pb2.InvokeRequest) -> StreamTranslator:
        if self.native_responses(request):
            return openai_responses.ResponsesStream(self.provider, request)
        return ChatStream(self.provider, request)
