"""A fake Google Gemini API: POST /v1beta/models/{model}:generateContent and
:streamGenerateContent?alt=sse, key in `x-goog-api-key` (or `?key=`).

Shapes follow the generate-content reference: `candidates[0].content.parts` (text,
functionCall), `finishReason`, `usageMetadata` (promptTokenCount, candidatesTokenCount,
cachedContentTokenCount, totalTokenCount). A stream is `data:` lines each holding a whole
GenerateContentResponse, cumulative usage on every one, the finishReason on the last, then the
connection closes (no end marker). Errors: {"error": {"code", "message", "status", "details"}}
with google.rpc statuses; a bad key is 400 INVALID_ARGUMENT with reason API_KEY_INVALID; 429
RESOURCE_EXHAUSTED carries a RetryInfo retryDelay.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .base import Behavior, FakeUpstream, Frame, fake_vector, json_response, pieces, sse, text_tokens

GOOGLE_STATUS: dict[int, tuple[str, str]] = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    403: ("PERMISSION_DENIED", "The caller does not have permission"),
    404: ("NOT_FOUND", "models/unknown is not found for API version v1beta"),
    408: ("DEADLINE_EXCEEDED", "Request timed out."),
    422: ("INVALID_ARGUMENT", "Unprocessable."),
    429: (
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details.",
    ),
    500: ("INTERNAL", "An internal error has occurred."),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}


class GeminiFake(FakeUpstream):
    provider = "gemini"

    def routes(self) -> list[Route]:
        return [Route("/v1beta/models/{target:path}", self._models, methods=["POST"])]

    async def _models(self, request: Request) -> Response:
        model, _, method = request.path_params["target"].partition(":")
        if method == "batchEmbedContents":
            return await self._embed(request, model)
        if method not in ("generateContent", "streamGenerateContent"):
            return self.error_response(404, Behavior(error_message=f"Method {method} not found"))
        stream = method == "streamGenerateContent"
        if stream and request.query_params.get("alt") != "sse":
            return self.error_response(400, Behavior(error_message="this fake streams only with alt=sse"))
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            body = None
        problem = self.validate(body) if isinstance(body, dict) else "Invalid JSON payload received."
        if problem:
            return self.error_response(400, Behavior(error_message=problem))
        return await self.handle(request, model, stream)

    async def _embed(self, request: Request, model: str) -> Response:
        """models/{model}:batchEmbedContents: one EmbedContentRequest per input, each naming the
        model; answered with `embeddings[].values` in order, and no token usage (the Developer
        API reports none for embeddings)."""
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            body = None
        items = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            return self.error_response(
                400, Behavior(error_message="* BatchEmbedContentsRequest.requests: is empty")
            )
        for i, item in enumerate(items):
            if item.get("model") != f"models/{model}":
                return self.error_response(
                    400,
                    Behavior(
                        error_message=f"* BatchEmbedContentsRequest.requests[{i}].model: does not match"
                    ),
                )
            if not (item.get("content") or {}).get("parts"):
                return self.error_response(
                    400,
                    Behavior(error_message=f"* BatchEmbedContentsRequest.requests[{i}].content: is empty"),
                )

        def texts(item: dict[str, Any]) -> str:
            return "".join(p.get("text", "") for p in item["content"]["parts"])

        def usage_of(body: Any, behavior: Behavior) -> dict[str, int]:
            prompt = sum(text_tokens(texts(item)) for item in body["requests"])
            return {"prompt": prompt, "completion": 0, "cached": 0, "write": 0, "write_1h": 0, "reasoning": 0}

        def answer(body: Any, model: str, behavior: Behavior, usage: dict[str, int]) -> Any:
            return {
                "embeddings": [
                    {"values": fake_vector(texts(item), int(item.get("outputDimensionality") or 8))}
                    for item in body["requests"]
                ]
            }

        return await self.handle(request, model, False, answer=answer, usage_of=usage_of)

    def validate(self, body: dict[str, Any]) -> str:
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            return "* GenerateContentRequest.contents: contents is not specified"
        for i, content in enumerate(contents):
            if content.get("role") not in ("user", "model"):
                return f"* GenerateContentRequest.contents[{i}].role: Please use a valid role: user, model."
            if not content.get("parts"):
                return f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."
        return ""

    def authorized(self, request: Request) -> bool:
        if self.api_key is None:
            return True
        return self.api_key in (request.headers.get("x-goog-api-key"), request.query_params.get("key"))

    def error_response(self, status: int, behavior: Behavior) -> Response:
        details: list[dict[str, Any]] = []
        if status == 401:  # Gemini answers a bad key with 400 + API_KEY_INVALID, not 401
            status, kind, message = 400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                }
            )
        else:
            kind, message = GOOGLE_STATUS.get(status, ("UNKNOWN", "error"))
            if behavior.error_message != Behavior.error_message:
                message = behavior.error_message
        if status == 429:
            details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"})
        body = {"error": {"code": status, "message": message, "status": behavior.error_type or kind}}
        if details:
            body["error"]["details"] = details
        return json_response(body, status)

    def _usage(self, usage: dict[str, int], candidates: int) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "promptTokenCount": usage["prompt"],
            "candidatesTokenCount": candidates,
            "totalTokenCount": usage["prompt"] + candidates,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": usage["prompt"]}],
        }
        if usage["cached"]:
            meta["cachedContentTokenCount"] = usage["cached"]
        if usage.get("reasoning"):
            meta["thoughtsTokenCount"] = usage["reasoning"]
            meta["totalTokenCount"] += usage["reasoning"]
        return meta

    def _parts(self, behavior: Behavior) -> list[dict[str, Any]]:
        if behavior.tool_call:
            name, args = behavior.tool_call
            return [{"functionCall": {"name": name, "args": args}}]
        return [{"text": behavior.text}]

    def complete_body(self, body: Any, model: str, behavior: Behavior, usage: dict[str, int]) -> Any:
        return {
            "candidates": [
                {
                    "content": {"parts": self._parts(behavior), "role": "model"},
                    "finishReason": behavior.finish or "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": self._usage(usage, usage["completion"]),
            "modelVersion": model,
            "responseId": "fake-response",
        }

    def stream_frames(self, body: Any, model: str, behavior: Behavior, usage: dict[str, int]) -> list[Frame]:
        if behavior.tool_call:
            parts_per_event = [self._parts(behavior)]
        else:
            parts_per_event = [[{"text": p}] for p in pieces(behavior.text)]
        frames = []
        for n, parts in enumerate(parts_per_event, start=1):
            so_far = min(usage["completion"], n)
            event = {
                "candidates": [{"content": {"parts": parts, "role": "model"}, "index": 0}],
                "usageMetadata": self._usage(usage, so_far),
                "modelVersion": model,
                "responseId": "fake-response",
            }
            frames.append(Frame(sse(event), content=True))
        last = {
            "candidates": [
                {
                    "content": {"parts": [{"text": ""}], "role": "model"},
                    "finishReason": behavior.finish or "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": self._usage(usage, usage["completion"]),
            "modelVersion": model,
            "responseId": "fake-response",
        }
        frames.append(Frame(sse(last)))
        return frames

    def stream_error_frame(self, behavior: Behavior) -> bytes:
        return sse(
            {
                "error": {
                    "code": 503,
                    "message": "The model is overloaded.",
                    "status": behavior.error_type or "UNAVAILABLE",
                }
            }
        )
