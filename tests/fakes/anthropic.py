"""A fake Anthropic Messages API: POST /v1/messages with `x-api-key` and `anthropic-version`.

Shapes follow the Messages and streaming references: a `message` object with content blocks
(text, tool_use) and usage whose `input_tokens` exclude cache reads/writes; streams of named
events message_start (input usage) -> content_block_start / ping / content_block_delta
(text_delta, input_json_delta) / content_block_stop -> message_delta (stop_reason, cumulative
output_tokens) -> message_stop. Errors: {"type": "error", "error": {"type", "message"},
"request_id"} with 400 invalid_request_error, 401 authentication_error, 403 permission_error,
404 not_found_error, 413 request_too_large, 429 rate_limit_error, 500 api_error,
529 overloaded_error; mid-stream errors arrive as `event: error`.

Prompt caching (the prompt-caching guide): the prefix up to the last block carrying
`cache_control` (in the order tools, system, messages) is the cached part. The first request
with a prefix writes it (`cache_creation_input_tokens`, split by TTL in `cache_creation`
{ephemeral_5m_input_tokens, ephemeral_1h_input_tokens} from the breakpoint's `ttl`); a later
request with the same prefix reads it (`cache_read_input_tokens`); `input_tokens` is the rest.
A behaviour that scripts cache counts wins over the simulation.

POST /v1/messages/count_tokens (the token-counting reference): the Messages body without
`max_tokens`, answered with {"input_tokens": N}, N being what /v1/messages would count for the
same prompt (all of it, cached or not).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .base import Behavior, FakeUpstream, Frame, json_response, pieces, sse, text_tokens

COUNTED_FIELDS = ("system", "messages", "tools", "tool_choice")

ANTHROPIC_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request"),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "model: not found"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    422: ("invalid_request_error", "Unprocessable"),
    429: ("rate_limit_error", "This request would exceed your organization's rate limit."),
    500: ("api_error", "Internal server error"),
    503: ("api_error", "Service unavailable"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}
TOOL_PREAMBLE = "Let me look that up."


class AnthropicFake(FakeUpstream):
    provider = "anthropic"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cached_prefixes: set[bytes] = set()  # what earlier requests wrote to the cache

    def reset(self) -> None:
        super().reset()
        self.cached_prefixes.clear()

    def routes(self) -> list[Route]:
        return [
            Route("/v1/messages", self._messages, methods=["POST"]),
            Route("/v1/messages/count_tokens", self._count_tokens, methods=["POST"]),
        ]

    async def _count_tokens(self, request: Request) -> Response:
        if not request.headers.get("anthropic-version"):
            return self.error_response(400, Behavior(error_message="anthropic-version: header is required"))
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            body = None
        problem = "body must be a JSON object"
        if isinstance(body, dict):
            problem = self.validate({"max_tokens": 1, **body})
            extra = sorted(set(body) - {"model", *COUNTED_FIELDS, "thinking", "mcp_servers"})
            if not problem and extra:
                problem = f"{extra[0]}: Extra inputs are not permitted"
        if problem:
            return self.error_response(400, Behavior(error_message=problem))

        def usage_of(body: Any, behavior: Behavior) -> dict[str, int]:
            prompt = self.prompt_tokens(body) if behavior.prompt_tokens is None else behavior.prompt_tokens
            return {"prompt": prompt, "completion": 0, "cached": 0, "write": 0, "write_1h": 0, "reasoning": 0}

        def answer(body: Any, model: str, behavior: Behavior, usage: dict[str, int]) -> Any:
            return {"input_tokens": usage["prompt"]}

        return await self.handle(request, str(body["model"]), False, answer=answer, usage_of=usage_of)

    @staticmethod
    def prompt_tokens(body: dict[str, Any]) -> int:
        """The fake's count of a prompt: the JSON of what the model reads, four bytes a token."""
        return text_tokens(orjson.dumps({k: body[k] for k in COUNTED_FIELDS if k in body}).decode())

    def usage_for(self, body: Any, behavior: Behavior) -> dict[str, int]:
        usage = super().usage_for(body, behavior)
        scripted = behavior.cached_tokens or behavior.cache_write_tokens
        if scripted or not isinstance(body, dict):
            return usage
        prefix, ttl = cache_prefix(body)
        if prefix is None:
            return usage
        usage["prompt"] = max(usage["prompt"], self.prompt_tokens(body))
        tokens = min(text_tokens(prefix.decode()), usage["prompt"])
        if prefix in self.cached_prefixes:
            usage["cached"] = tokens
        else:
            self.cached_prefixes.add(prefix)
            usage["write"] = tokens
            usage["write_1h"] = tokens if ttl == "1h" else 0
        return usage

    async def _messages(self, request: Request) -> Response:
        if not request.headers.get("anthropic-version"):
            return self.error_response(400, Behavior(error_message="anthropic-version: header is required"))
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            body = None
        problem = self.validate(body) if isinstance(body, dict) else "body must be a JSON object"
        if problem:
            return self.error_response(400, Behavior(error_message=problem))
        return await self.handle(request, str(body["model"]), bool(body.get("stream")))

    def validate(self, body: dict[str, Any]) -> str:
        for name in ("model", "max_tokens", "messages"):
            if name not in body:
                return f"{name}: Field required"
        if not body["messages"]:
            return "messages: at least one message is required"
        for i, message in enumerate(body["messages"]):
            if message.get("role") not in ("user", "assistant"):
                return f"messages.{i}.role: Input should be 'user' or 'assistant'"
            content = message.get("content")
            if isinstance(content, list):
                for block in content:
                    if block.get("type") == "text" and not block.get("text"):
                        return f"messages.{i}: text content blocks must be non-empty"
        if body.get("temperature", 0) > 1:
            return "temperature: Input should be less than or equal to 1"
        return ""

    def authorized(self, request: Request) -> bool:
        return self.api_key is None or request.headers.get("x-api-key") in self.keys

    def rate_limit_headers(self, limit: int, remaining: int, reset_s: float) -> dict[str, str]:
        """anthropic-ratelimit-requests-*, the reset as an RFC 3339 instant."""
        reset = datetime.now(UTC) + timedelta(seconds=reset_s)
        return {
            "anthropic-ratelimit-requests-limit": str(limit),
            "anthropic-ratelimit-requests-remaining": str(remaining),
            "anthropic-ratelimit-requests-reset": reset.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    def error_response(self, status: int, behavior: Behavior) -> Response:
        kind, message = ANTHROPIC_ERRORS.get(status, ("api_error", "error"))
        if behavior.error_message != Behavior.error_message:
            message = behavior.error_message
        body = {
            "type": "error",
            "error": {"type": behavior.error_type or kind, "message": message},
            "request_id": "req_fake",
        }
        return json_response(body, status, {"request-id": "req_fake"})

    def _usage(self, usage: dict[str, int], output: int) -> dict[str, Any]:
        written, written_1h = usage.get("write", 0), usage.get("write_1h", 0)
        return {
            "input_tokens": usage["prompt"] - usage["cached"] - written,
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": usage["cached"],
            "cache_creation": {
                "ephemeral_5m_input_tokens": written - written_1h,
                "ephemeral_1h_input_tokens": written_1h,
            },
            "output_tokens": output,
        }

    def _stop(self, behavior: Behavior) -> str:
        return behavior.finish or ("tool_use" if behavior.tool_call else "end_turn")

    def complete_body(self, body: Any, model: str, behavior: Behavior, usage: dict[str, int]) -> Any:
        if behavior.tool_call:
            name, args = behavior.tool_call
            content = [
                {"type": "text", "text": TOOL_PREAMBLE},
                {"type": "tool_use", "id": "toolu_01FakeToolUse", "name": name, "input": args},
            ]
        else:
            content = [{"type": "text", "text": behavior.text}]
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": self._stop(behavior),
            "stop_sequence": None,
            "usage": self._usage(usage, usage["completion"]),
        }

    def stream_frames(self, body: Any, model: str, behavior: Behavior, usage: dict[str, int]) -> list[Frame]:
        start = {
            "type": "message_start",
            "message": {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": self._usage(usage, 1),
            },
        }
        frames = [Frame(sse(start, "message_start"))]

        def block(index: int, content_block: dict, deltas: list[dict]) -> None:
            frames.append(
                Frame(
                    sse(
                        {"type": "content_block_start", "index": index, "content_block": content_block},
                        "content_block_start",
                    )
                )
            )
            if index == 0:
                frames.append(Frame(sse({"type": "ping"}, "ping")))
            for delta in deltas:
                frames.append(
                    Frame(
                        sse(
                            {"type": "content_block_delta", "index": index, "delta": delta},
                            "content_block_delta",
                        ),
                        content=True,
                    )
                )
            frames.append(Frame(sse({"type": "content_block_stop", "index": index}, "content_block_stop")))

        if behavior.tool_call:
            name, args = behavior.tool_call
            block(0, {"type": "text", "text": ""}, [{"type": "text_delta", "text": TOOL_PREAMBLE}])
            text = orjson.dumps(args).decode()
            half = max(1, len(text) // 2)
            parts = [text[i : i + half] for i in range(0, len(text), half)]
            block(
                1,
                {"type": "tool_use", "id": "toolu_01FakeToolUse", "name": name, "input": {}},
                [{"type": "input_json_delta", "partial_json": ""}]
                + [{"type": "input_json_delta", "partial_json": p} for p in parts],
            )
        else:
            block(
                0,
                {"type": "text", "text": ""},
                [{"type": "text_delta", "text": p} for p in pieces(behavior.text)],
            )
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self._stop(behavior), "stop_sequence": None},
            "usage": {"output_tokens": usage["completion"]},
        }
        frames.append(Frame(sse(delta, "message_delta")))
        frames.append(Frame(sse({"type": "message_stop"}, "message_stop")))
        return frames

    def stream_error_frame(self, behavior: Behavior) -> bytes:
        kind = behavior.error_type or "overloaded_error"
        message = "Overloaded" if behavior.error_message == Behavior.error_message else behavior.error_message
        return sse({"type": "error", "error": {"type": kind, "message": message}}, "error")


def cache_prefix(body: dict[str, Any]) -> tuple[bytes | None, str]:
    """The prompt up to and including the last block with `cache_control` (tools, then system,
    then messages), as JSON bytes, and that breakpoint's TTL; (None, "") without a breakpoint."""
    blocks: list[Any] = list(body.get("tools") or [])
    system = body.get("system")
    blocks += system if isinstance(system, list) else ([{"type": "text", "text": system}] if system else [])
    for message in body.get("messages") or []:
        content = message.get("content")
        blocks += content if isinstance(content, list) else [{"type": "text", "text": content}]
    last = max(
        (i for i, b in enumerate(blocks) if isinstance(b, dict) and b.get("cache_control")), default=-1
    )
    if last < 0:
        return None, ""
    return orjson.dumps(blocks[: last + 1]), str(blocks[last]["cache_control"].get("ttl") or "5m")
