"""The built-in demo provider: deterministic text, configurable latency, real usage numbers.

It answers with no API key so a fresh `make run` works. The reply is a pure function of the
request (same prompt, same answer); usage counts the same tokens a real call would be billed
for under the estimator in switchyard.tokens.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

from switchyard.tokens import estimate_prompt_tokens, last_user_text
from switchyard.v1 import invoke_pb2

from .base import Completed, ProviderAdapter

_VOCABULARY = [
    "switchyard",
    "routes",
    "every",
    "request",
    "to",
    "the",
    "best",
    "model",
    "by",
    "measured",
    "latency",
    "cost",
    "and",
    "quality",
    "fails",
    "over",
    "in",
    "milliseconds",
    "records",
    "tokens",
    "and",
    "spend",
    "in",
    "clickhouse",
    "and",
    "keeps",
    "budgets",
    "exact",
]
DEFAULT_REPLY_WORDS = 24


def demo_reply_words(request: invoke_pb2.InvokeRequest, model: str) -> list[str]:
    """Deterministic words: an echo of the prompt's start, then a seeded walk of a vocabulary."""
    prompt = last_user_text(request)
    words = [f"[{model}]", *prompt.split()[:6]]
    seed = int.from_bytes(hashlib.blake2b(prompt.encode(), digest_size=8).digest(), "big")
    limit = request.max_tokens or DEFAULT_REPLY_WORDS
    target = min(limit, DEFAULT_REPLY_WORDS)
    while len(words) < target:
        seed = (seed * 6364136223846793005 + 1442695040888963407) % 2**64
        words.append(_VOCABULARY[seed % len(_VOCABULARY)])
    return words[:limit]


def demo_tool_call(request: invoke_pb2.InvokeRequest) -> invoke_pb2.ToolCall | None:
    """When tools are offered, the demo calls the first one (so tool plumbing can be tried)."""
    if not request.tools or request.tool_choice_json == '"none"':
        return None
    if request.messages and request.messages[-1].role == "tool":
        return None  # it has the tool's answer: reply in text
    tool = request.tools[0]
    digest = hashlib.blake2b(last_user_text(request).encode(), digest_size=4).hexdigest()
    return invoke_pb2.ToolCall(id=f"call_{digest}", name=tool.name, arguments_json="{}")


class Adapter(ProviderAdapter):
    @property
    def _latency_s(self) -> float:
        scale = float(self.deployment.options.get("latency_scale", 1.0))
        return self.settings.demo_latency_ms * scale / 1000.0

    def _finish(
        self, request: invoke_pb2.InvokeRequest, words: list[str], call: invoke_pb2.ToolCall | None
    ) -> Completed:
        message = invoke_pb2.Message(role="assistant")
        if call is not None:
            message.tool_calls.append(call)
            finish = "tool_calls"
            completion_tokens = 8
        else:
            message.content.add(text=" ".join(words))
            finish = "length" if request.max_tokens and len(words) >= request.max_tokens else "stop"
            completion_tokens = len(words)
        usage = invoke_pb2.Usage(
            prompt_tokens=estimate_prompt_tokens(request), completion_tokens=completion_tokens
        )
        return Completed(message=message, finish_reason=finish, usage=usage)

    async def complete(self, request: invoke_pb2.InvokeRequest) -> Completed:
        if self._latency_s:
            await asyncio.sleep(self._latency_s)
        call = demo_tool_call(request)
        words = [] if call else demo_reply_words(request, self.deployment.model)
        return self._finish(request, words, call)

    async def stream(self, request: invoke_pb2.InvokeRequest) -> AsyncIterator[invoke_pb2.Chunk | Completed]:
        if self._latency_s:
            await asyncio.sleep(self._latency_s)  # time to first token
        call = demo_tool_call(request)
        words = [] if call else demo_reply_words(request, self.deployment.model)
        delay = self.settings.demo_chunk_delay_ms / 1000.0
        if call is not None:
            yield invoke_pb2.Chunk(
                seq=0,
                tool_calls=[
                    invoke_pb2.ToolCallDelta(
                        index=0, id=call.id, name=call.name, arguments_delta=call.arguments_json
                    )
                ],
            )
        for seq, word in enumerate(words):
            if seq and delay:
                await asyncio.sleep(delay)
            yield invoke_pb2.Chunk(seq=seq, delta_text=word if seq == 0 else " " + word)
        yield self._finish(request, words, call)
