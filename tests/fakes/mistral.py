"""A fake Mistral chat API: POST /v1/chat/completions, `Authorization: Bearer <key>`.

Like OpenAI's shape, with Mistral's differences: unknown body fields are rejected with 422 and a
pydantic-style `extra_forbidden` detail (so `stream_options`, `max_completion_tokens` or `seed`
fail, as they do on api.mistral.ai); the last stream chunk carries the finish reason and the
usage together (no include_usage option); a tool call streams whole in one chunk; tool_choice
takes "any"; errors are {"object": "error", "message", "type", "param", "code"}, and a bad key
is {"message": "Unauthorized", "request_id": ...}.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from .base import Behavior, Frame, json_response, pieces, sse
from .openai import OpenAIFake

ALLOWED_FIELDS = {
    "model", "messages", "temperature", "top_p", "max_tokens", "stream", "stop", "random_seed",
    "response_format", "tools", "tool_choice", "presence_penalty", "frequency_penalty", "n",
    "prediction", "parallel_tool_calls", "safe_prompt", "prompt_mode",
}  # fmt: skip
TOOL_CHOICES = {"auto", "none", "any", "required"}
# POST /v1/embeddings (Mistral's embeddings reference): no `user`, `output_dimension` for the size.
EMBEDDING_FIELDS = {"model", "input", "output_dimension", "output_dtype", "encoding_format"}

MISTRAL_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request"),
    403: ("invalid_request_error", "Forbidden"),
    404: ("invalid_request_error", "Invalid model"),
    422: ("invalid_request_message_error", "Unprocessable"),
    429: ("rate_limited", "Requests rate limit exceeded"),
    500: ("internal_server_error", "Internal server error"),
    503: ("internal_server_error", "Service unavailable."),
}


class MistralFake(OpenAIFake):
    provider = "mistral"

    @property
    def base_url(self) -> str:
        return self.url  # Mistral's SDK convention: the adapter adds /v1/chat/completions

    async def _embeddings(self, request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            body = {}
        if isinstance(body, dict) and (extra := sorted(set(body) - EMBEDDING_FIELDS)):
            return _extra_forbidden(extra)
        return await super()._embeddings(request)

    def embedding_dimensions(self, body: dict[str, Any]) -> int:
        return int(body.get("output_dimension") or super().embedding_dimensions(body))

    def embeddings_body(self, body: Any, model: str, behavior: Behavior, usage: dict[str, int]) -> Any:
        out = super().embeddings_body(body, model, behavior, usage)
        out["id"] = "embd-fake"
        out["usage"]["completion_tokens"] = 0
        return out

    async def _chat(self, request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            body = {}
        extra = sorted(set(body) - ALLOWED_FIELDS) if isinstance(body, dict) else []
        if extra:
            return _extra_forbidden(extra)
        choice = body.get("tool_choice")
        if isinstance(choice, str) and choice not in TOOL_CHOICES:
            return self.error_response(422, Behavior(error_message=f"invalid tool_choice {choice}"))
        return await super()._chat(request)

    def validate(self, body: dict[str, Any]) -> str:
        if not body.get("model"):
            return "model is required"
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return "messages must be a non-empty list"
        return ""

    def error_response(self, status: int, behavior: Behavior) -> Response:
        if status == 401:
            return json_response({"message": "Unauthorized", "request_id": "fake-req"}, 401)
        kind, message = MISTRAL_ERRORS.get(status, ("internal_server_error", "error"))
        if behavior.error_message != Behavior.error_message:
            message = behavior.error_message
        return json_response(
            {
                "object": "error",
                "message": message,
                "type": behavior.error_type or kind,
                "param": None,
                "code": None,
            },
            status,
        )

    def _usage(self, usage: dict[str, int]) -> dict[str, Any]:
        return {
            "prompt_tokens": usage["prompt"],
            "completion_tokens": usage["completion"],
            "total_tokens": usage["prompt"] + usage["completion"],
        }

    def complete_body(self, body: Any, model: str, behavior: Behavior, usage: dict[str, int]) -> Any:
        message: dict[str, Any] = {"role": "assistant", "content": "", "tool_calls": None, "prefix": False}
        if behavior.tool_call:
            name, args = behavior.tool_call
            message["tool_calls"] = [
                {
                    "id": "D681PevKs",
                    "type": "function",
                    "function": {"name": name, "arguments": orjson.dumps(args).decode()},
                    "index": 0,
                }
            ]
        else:
            message["content"] = behavior.text
        return {
            "id": "cmpl-fake",
            "object": "chat.completion",
            "model": model,
            "created": int(time.time()),
            "choices": [{"index": 0, "message": message, "finish_reason": self._finish(behavior)}],
            "usage": self._usage(usage),
        }

    def _mchunk(
        self, model: str, delta: dict[str, Any], finish: str | None, usage: dict | None = None
    ) -> dict:
        chunk: dict[str, Any] = {
            "id": "cmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if usage is not None:
            chunk["usage"] = usage
        return chunk

    def stream_frames(self, body: Any, model: str, behavior: Behavior, usage: dict[str, int]) -> list[Frame]:
        frames = [Frame(sse(self._mchunk(model, {"role": "assistant", "content": ""}, None)))]
        if behavior.tool_call:
            name, args = behavior.tool_call
            call = {
                "id": "D681PevKs",
                "function": {"name": name, "arguments": orjson.dumps(args).decode()},
                "index": 0,
            }
            frames.append(Frame(sse(self._mchunk(model, {"tool_calls": [call]}, None)), content=True))
        else:
            frames += [
                Frame(sse(self._mchunk(model, {"content": p}, None)), content=True)
                for p in pieces(behavior.text)
            ]
        frames.append(
            Frame(sse(self._mchunk(model, {"content": ""}, self._finish(behavior), self._usage(usage))))
        )
        frames.append(Frame(b"data: [DONE]\n\n"))
        return frames


def _extra_forbidden(names: list[str]) -> Response:
    """Mistral's 422 for unknown body fields (pydantic's extra_forbidden)."""
    detail = [
        {"type": "extra_forbidden", "loc": ["body", name], "msg": "Extra inputs are not permitted"}
        for name in names
    ]
    return json_response(
        {
            "object": "error",
            "message": {"detail": detail},
            "type": "invalid_request_message_error",
            "param": None,
            "code": None,
        },
        422,
    )
