"""A fake OpenAI Chat Completions server (also any OpenAI-compatible one: vLLM, Ollama, Groq).

POST /v1/chat/completions, `Authorization: Bearer <key>`. Shapes follow the API reference:
`chat.completion` objects; streams of `chat.completion.chunk` with `choices[0].delta`, the
role first, tool calls as indexed deltas whose arguments arrive in pieces, a finish chunk, with
`stream_options.include_usage` a last chunk with `choices: []` and the usage (earlier chunks
carry `"usage": null`), then `data: [DONE]`. Errors: {"error": {"message", "type", "param",
"code"}} with the status's real type/code.

POST /v1/embeddings (the embeddings reference): `input` a string or a list of strings, `model`,
`dimensions`, `encoding_format` float or base64 (little-endian float32), `user`; answered with a
`list` of `embedding` objects (`index`, `embedding`) and `usage` {prompt_tokens, total_tokens}.
Vectors are deterministic (`fake_vector`); `dimensions` defaults to EMBEDDING_DIMENSIONS.

POST /v1/responses (the Responses API reference): `model` and `input` required, unknown
parameters refused with 400 "Unknown parameter" as OpenAI does; answered with a `response`
object (a `reasoning` item when reasoning tokens are reported, then a `message` item with an
`output_text` part, or a `function_call` item), `status` `completed` or `incomplete` with
`incomplete_details.reason` (Behavior.finish "length" / "content_filter"), and `usage`
{input_tokens, input_tokens_details.cached_tokens, output_tokens,
output_tokens_details.reasoning_tokens, total_tokens}. Streamed: typed events (`event:` and a
`data:` with `type` and `sequence_number`) response.created, response.in_progress,
output_item.added, content_part.added, output_text.delta..., or function_call_arguments.delta...,
the `.done` events, then response.completed (or response.incomplete) with the usage; an
in-stream failure is an `error` event.
"""

from __future__ import annotations

import base64
import struct
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .base import Behavior, FakeUpstream, Frame, fake_vector, json_response, pieces, sse, text_tokens

EMBEDDING_DIMENSIONS = 8  # small: the real models' 1536 or 3072 would only slow the tests

OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request"),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided: sk-fake****1234."),
    403: (
        "invalid_request_error",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported",
    ),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model does not exist or you do not have access to it.",
    ),
    408: ("server_error", None, "Request timed out."),
    409: ("server_error", None, "Conflict"),
    422: ("invalid_request_error", None, "Unprocessable"),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests"),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    504: ("server_error", None, "Gateway timeout."),
}


# The create parameters of the Responses API reference; anything else is a 400.
RESPONSES_PARAMETERS = {
    "background", "conversation", "include", "input", "instructions", "max_output_tokens", "max_tool_calls",
    "metadata", "model", "parallel_tool_calls", "previous_response_id", "prompt", "prompt_cache_key",
    "prompt_cache_retention", "reasoning", "safety_identifier", "service_tier", "store", "stream",
    "stream_options", "temperature", "text", "tool_choice", "tools", "top_logprobs", "top_p", "truncation", "user",
}  # fmt: skip


def _tool_call_id(name: str) -> str:
    return f"call_{abs(hash(name)) % 10**8:08d}"


class OpenAIFake(FakeUpstream):
    provider = "openai"
    path = "/v1/chat/completions"

    embeddings_path = "/v1/embeddings"

    responses_path = "/v1/responses"

    def routes(self) -> list[Route]:
        return [
            Route(self.path, self._chat, methods=["POST"]),
            Route(self.embeddings_path, self._embeddings, methods=["POST"]),
            Route(self.responses_path, self._responses, methods=["POST"]),
        ]

    # --- the Responses API ---

    async def _responses(self, request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            body = {}
        problem = self.validate_responses(body) if isinstance(body, dict) else "body must be an object"
        if problem:
            return self.error_response(400, Behavior(error_message=problem))
        return await self.handle(
            request,
            str(body["model"]),
            bool(body.get("stream")),
            answer=self.response_object,
            frames_of=self.response_frames,
            error_frame=self.response_error_frame,
        )

    def validate_responses(self, body: dict[str, Any]) -> str:
        unknown = sorted(set(body) - RESPONSES_PARAMETERS)
        if unknown:
            return f"Unknown parameter: '{unknown[0]}'."
        if not body.get("model"):
            return "Missing required parameter: 'model'."
        if not body.get("input"):
            return "Missing required parameter: 'input'."
        if body.get("previous_response_id") and body.get("store") is False:
            return "Previous response cannot be used with store=false."
        return ""

    def _response_usage(self, usage: dict[str, int]) -> dict[str, Any]:
        return {
            "input_tokens": usage["prompt"],
            "input_tokens_details": {"cached_tokens": usage["cached"]},
            "output_tokens": usage["completion"],
            "output_tokens_details": {"reasoning_tokens": usage.get("reasoning", 0)},
            "total_tokens": usage["prompt"] + usage["completion"],
        }

    def _status(self, behavior: Behavior) -> tuple[str, dict[str, str] | None]:
        reason = {"length": "max_output_tokens", "content_filter": "content_filter"}.get(
            behavior.finish or ""
        )
        return ("incomplete", {"reason": reason}) if reason else ("completed", None)

    def _output_items(self, behavior: Behavior, usage: dict[str, int], status: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        if usage.get("reasoning"):
            items.append({"id": "rs_fake", "type": "reasoning", "summary": []})
        if behavior.tool_call:
            name, args = behavior.tool_call
            items.append(
                {"id": "fc_fake", "type": "function_call", "status": status, "call_id": _tool_call_id(name),
                 "name": name, "arguments": orjson.dumps(args).decode()}
            )  # fmt: skip
        else:
            items.append(
                {"id": "msg_fake", "type": "message", "role": "assistant", "status": status,
                 "content": [{"type": "output_text", "text": behavior.text, "annotations": [], "logprobs": []}]}
            )  # fmt: skip
        return items

    def response_object(
        self,
        body: Any,
        model: str,
        behavior: Behavior,
        usage: dict[str, int] | None,
        status: str | None = None,
    ) -> dict[str, Any]:
        """A `response` object; usage None and a status: the in-progress one the stream opens with."""
        final_status, incomplete = self._status(behavior)
        status = status or final_status
        done = status in ("completed", "incomplete")
        return {
            "id": "resp_fake",
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": incomplete if done else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": model,
            "output": self._output_items(behavior, usage or {}, status) if done else [],
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools", []),
            "top_p": body.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": self._response_usage(usage) if done and usage else None,
            "user": None,
            "metadata": body.get("metadata") or {},
        }

    def response_frames(
        self, body: Any, model: str, behavior: Behavior, usage: dict[str, int]
    ) -> list[Frame]:
        seq = iter(range(1_000_000))

        def event(kind: str, content: bool = False, **data: Any) -> Frame:
            return Frame(sse({"type": kind, "sequence_number": next(seq), **data}, kind), content=content)

        opening = self.response_object(body, model, behavior, None, status="in_progress")
        frames = [
            event("response.created", response=opening),
            event("response.in_progress", response=opening),
        ]
        status, _ = self._status(behavior)
        items = self._output_items(behavior, usage, status)
        for index, item in enumerate(items):
            if item["type"] == "reasoning":
                frames.append(event("response.output_item.added", output_index=index, item=item))
                frames.append(event("response.output_item.done", output_index=index, item=item))
            elif item["type"] == "function_call":
                added = dict(item, arguments="", status="in_progress")
                frames.append(event("response.output_item.added", output_index=index, item=added))
                text = item["arguments"]
                third = max(1, len(text) // 3)
                for i in range(0, len(text), third):
                    frames.append(
                        event("response.function_call_arguments.delta", True, item_id=item["id"],
                              output_index=index, delta=text[i : i + third])
                    )  # fmt: skip
                frames.append(
                    event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                          arguments=text)
                )  # fmt: skip
                frames.append(event("response.output_item.done", output_index=index, item=item))
            else:
                where = {"item_id": item["id"], "output_index": index, "content_index": 0}
                empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                frames.append(
                    event("response.output_item.added", output_index=index,
                          item=dict(item, content=[], status="in_progress"))
                )  # fmt: skip
                frames.append(event("response.content_part.added", **where, part=empty))
                for piece in pieces(behavior.text):
                    frames.append(
                        event("response.output_text.delta", True, **where, delta=piece, logprobs=[])
                    )
                frames.append(event("response.output_text.done", **where, text=behavior.text, logprobs=[]))
                frames.append(event("response.content_part.done", **where, part=item["content"][0]))
                frames.append(event("response.output_item.done", output_index=index, item=item))
        final = self.response_object(body, model, behavior, usage)
        frames.append(event(f"response.{final['status']}", response=final))
        return frames

    def response_error_frame(self, behavior: Behavior) -> bytes:
        code = "rate_limit_exceeded" if behavior.error_type == "rate_limit_exceeded" else "server_error"
        payload = {"type": "error", "code": code, "message": behavior.error_message, "param": None,
                   "sequence_number": 0}  # fmt: skip
        return sse(payload, "error")

    async def _embeddings(self, request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            body = {}
        problem = self.validate_embeddings(body) if isinstance(body, dict) else "body must be an object"
        if problem:
            return self.error_response(400, Behavior(error_message=problem))
        return await self.handle(
            request, str(body["model"]), False, answer=self.embeddings_body, usage_of=self.embedding_usage
        )

    def validate_embeddings(self, body: dict[str, Any]) -> str:
        if not body.get("model"):
            return "you must provide a model parameter"
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
            return "'input' : input must be a non-empty string or array of non-empty strings"
        if body.get("encoding_format", "float") not in ("float", "base64"):
            return "'encoding_format' must be 'float' or 'base64'"
        return ""

    @staticmethod
    def texts(body: dict[str, Any]) -> list[str]:
        texts = body.get("input")
        return [texts] if isinstance(texts, str) else list(texts or [])

    def embedding_usage(self, body: Any, behavior: Behavior) -> dict[str, int]:
        prompt = behavior.prompt_tokens
        if prompt is None:
            prompt = sum(text_tokens(t) for t in self.texts(body))
        return {"prompt": prompt, "completion": 0, "cached": 0, "write": 0, "write_1h": 0, "reasoning": 0}

    def embedding_dimensions(self, body: dict[str, Any]) -> int:
        return int(body.get("dimensions") or EMBEDDING_DIMENSIONS)

    def embeddings_body(self, body: Any, model: str, behavior: Behavior, usage: dict[str, int]) -> Any:
        dimensions = self.embedding_dimensions(body)
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(self.texts(body)):
            vector = fake_vector(text, dimensions)
            encoded: Any = (
                base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode() if as_base64 else vector
            )
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        return {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": usage["prompt"], "total_tokens": usage["prompt"]},
        }

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    async def _chat(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = {}
        problem = self.validate(body) if isinstance(body, dict) else "body must be an object"
        if problem:
            return self.error_response(400, Behavior(error_message=problem))
        return await self.handle(request, str(body.get("model", "")), bool(body.get("stream")))

    def validate(self, body: dict[str, Any]) -> str:
        if not body.get("model"):
            return "you must provide a model parameter"
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return "'messages' must be a non-empty array"
        if "stream_options" in body and not body.get("stream"):
            return "The 'stream_options' parameter is only allowed when 'stream' is enabled."
        return ""

    def authorized(self, request: Request) -> bool:
        if self.api_key is None:
            return True
        return request.headers.get("authorization") in {f"Bearer {key}" for key in self.keys}

    def error_response(self, status: int, behavior: Behavior) -> Response:
        kind, code, message = OPENAI_ERRORS.get(status, ("server_error", None, "error"))
        if behavior.error_message != Behavior.error_message:
            message = behavior.error_message
        body = {
            "error": {"message": message, "type": behavior.error_type or kind, "param": None, "code": code}
        }
        return json_response(body, status)

    def _usage(self, usage: dict[str, int]) -> dict[str, Any]:
        return {
            "prompt_tokens": usage["prompt"],
            "completion_tokens": usage["completion"],
            "total_tokens": usage["prompt"] + usage["completion"],
            "prompt_tokens_details": {"cached_tokens": usage["cached"], "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": usage.get("reasoning", 0), "audio_tokens": 0},
        }

    def _finish(self, behavior: Behavior) -> str:
        return behavior.finish or ("tool_calls" if behavior.tool_call else "stop")

    def complete_body(self, body: Any, model: str, behavior: Behavior, usage: dict[str, int]) -> Any:
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None, "annotations": []}
        if behavior.tool_call:
            name, args = behavior.tool_call
            message["tool_calls"] = [
                {
                    "id": _tool_call_id(name),
                    "type": "function",
                    "function": {"name": name, "arguments": orjson.dumps(args).decode()},
                }
            ]
        else:
            message["content"] = behavior.text
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": self._finish(behavior)}
            ],
            "usage": self._usage(usage),
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }

    def _chunk(self, model: str, delta: dict[str, Any] | None, finish: str | None, with_usage: bool) -> dict:
        chunk: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": []
            if delta is None
            else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if with_usage:
            chunk["usage"] = None
        return chunk

    def content_deltas(self, behavior: Behavior) -> list[dict[str, Any]]:
        if behavior.tool_call:
            name, args = behavior.tool_call
            text = orjson.dumps(args).decode()
            third = max(1, len(text) // 3)
            parts = [text[i : i + third] for i in range(0, len(text), third)]
            deltas: list[dict[str, Any]] = [
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": _tool_call_id(name),
                            "type": "function",
                            "function": {"name": name, "arguments": ""},
                        }
                    ]
                }
            ]
            deltas += [{"tool_calls": [{"index": 0, "function": {"arguments": p}}]} for p in parts]
            return deltas
        return [{"content": p} for p in pieces(behavior.text)]

    def stream_frames(self, body: Any, model: str, behavior: Behavior, usage: dict[str, int]) -> list[Frame]:
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        frames = [
            Frame(
                sse(
                    self._chunk(
                        model, {"role": "assistant", "content": "", "refusal": None}, None, with_usage
                    )
                )
            )
        ]
        frames += [
            Frame(sse(self._chunk(model, d, None, with_usage)), content=True)
            for d in self.content_deltas(behavior)
        ]
        frames.append(Frame(sse(self._chunk(model, {}, self._finish(behavior), with_usage))))
        if with_usage:
            last = self._chunk(model, None, None, False)
            last["usage"] = self._usage(usage)
            frames.append(Frame(sse(last)))
        frames.append(Frame(b"data: [DONE]\n\n"))
        return frames

    def stream_error_frame(self, behavior: Behavior) -> bytes:
        return sse(
            {
                "error": {
                    "message": behavior.error_message,
                    "type": behavior.error_type or "server_error",
                    "param": None,
                    "code": None,
                }
            }
        )
