"""The built-in demo provider: deterministic text, configurable latency, real usage numbers.

It answers with no API key so a fresh `make run` works; `demo/embed` answers embeddings with
a hash-seeded unit vector per input. The reply is a pure function of the
request (same prompt, same answer); usage counts the same tokens a real call would be billed
for under the estimator in switchyard.tokens.

Test/demo knobs (deployment `options`, documented in docs/routing.md): `latency_ms`,
`fail_status`, `fail_every`, `retry_after_s`, `fail_after_chunks`, `fail_latency_ms`, and
`control_file`, a JSON file with the same keys that overrides them while the worker runs, so a
test can make a deployment fail, slow down or heal without restarting anything.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

from switchyard.errors import ErrorCode, GatewayError
from switchyard.tokens import estimate_prompt_tokens, last_user_text
from switchyard.v1 import invoke_pb2
from switchyard.vocab import FinishReason

from .base import AdapterOptions, Completed, ProviderAdapter, ReadPace

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
    if not request.tools or request.tool_choice.mode == invoke_pb2.ToolChoice.MODE_NONE:
        return None
    if request.messages and request.messages[-1].role == invoke_pb2.ROLE_TOOL:
        return None  # it has the tool's answer: reply in text
    tool = request.tools[0]
    digest = hashlib.blake2b(last_user_text(request).encode(), digest_size=4).hexdigest()
    return invoke_pb2.ToolCall(id=f"call_{digest}", name=tool.name, arguments_json="{}")


DEFAULT_DIMENSIONS = 256


def demo_vector(text: str, dimensions: int) -> list[float]:
    """A unit vector seeded by the text's hash: the same text, the same vector."""
    raw = hashlib.shake_256(text.encode()).digest(2 * dimensions)
    values = [int.from_bytes(raw[i : i + 2], "big") / 32767.5 - 1.0 for i in range(0, 2 * dimensions, 2)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def demo_embeddings(request: invoke_pb2.InvokeRequest) -> Completed:
    """One deterministic vector per input; usage is the demo's token estimate (what it bills)."""
    spec = request.embedding
    dimensions = spec.dimensions or DEFAULT_DIMENSIONS
    return Completed(
        message=invoke_pb2.Message(role=invoke_pb2.ROLE_ASSISTANT),
        finish_reason=FinishReason.STOP,
        usage=invoke_pb2.Usage(prompt_tokens=estimate_prompt_tokens(request)),
        embeddings=[invoke_pb2.Embedding(values=demo_vector(text, dimensions)) for text in spec.inputs],
    )


FAULT_KEYS = (
    "latency_ms",
    "fail_status",
    "fail_every",
    "retry_after_s",
    "fail_after_chunks",
    "fail_latency_ms",
)

# The neutral code a real adapter would map each simulated upstream status to.
_STATUS_CODES = {
    400: ErrorCode.INVALID_REQUEST,
    401: ErrorCode.PROVIDER_AUTH_FAILED,  # the provider refusing the gateway's own key
    403: ErrorCode.PROVIDER_AUTH_FAILED,
    404: ErrorCode.NOT_FOUND,
    408: ErrorCode.TIMEOUT,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    422: ErrorCode.UNPROCESSABLE,
    429: ErrorCode.RATE_LIMITED,
    500: ErrorCode.UPSTREAM_ERROR,
    502: ErrorCode.UPSTREAM_ERROR,
    503: ErrorCode.UNAVAILABLE,
    504: ErrorCode.TIMEOUT,
    529: ErrorCode.OVERLOADED,
}


@dataclass(frozen=True)
class Behaviour:
    """How the demo deployment behaves on one call."""

    latency_ms: float
    fail_status: int = 0  # 0: answer normally
    fail_every: int = 1  # fail calls number fail_every, 2*fail_every, ... (1: every call)
    retry_after_s: float = 0.0  # sent with the failure, as a Retry-After header would be
    fail_after_chunks: int = 0  # streams: chunks sent before the failure (0: before the first)
    fail_latency_ms: float = 0.0  # how long the failing call takes


def behaviour(
    options: Mapping[str, Any], overrides: Mapping[str, Any], default_latency_ms: float
) -> Behaviour:
    """Deployment options, then control-file overrides, on top of the demo defaults."""
    merged = {k: options[k] for k in FAULT_KEYS if k in options}
    merged.update({k: overrides[k] for k in FAULT_KEYS if k in overrides})
    return Behaviour(
        latency_ms=float(merged.get("latency_ms", default_latency_ms)),
        fail_status=int(merged.get("fail_status", 0)),
        fail_every=max(int(merged.get("fail_every", 1)), 1),
        retry_after_s=float(merged.get("retry_after_s", 0.0)),
        fail_after_chunks=max(int(merged.get("fail_after_chunks", 0)), 0),
        fail_latency_ms=float(merged.get("fail_latency_ms", 0.0)),
    )


def simulated_error(status: int, retry_after_s: float, provider: str) -> GatewayError:
    code = _STATUS_CODES.get(status, ErrorCode.UPSTREAM_ERROR if status >= 500 else ErrorCode.INVALID_REQUEST)
    return GatewayError(
        code,
        f"demo upstream answered HTTP {status} (simulated)",
        provider_status=status,
        retry_after_s=retry_after_s,
        provider=provider,
    )


class DemoOptions(AdapterOptions):
    """The demo's knobs (module docstring); the fault keys are also a control file's."""

    latency_scale: float = 1.0  # times SWITCHYARD_DEMO_LATENCY_MS
    control_file: str = ""
    latency_ms: float | None = None
    fail_status: int = 0
    fail_every: int = 1
    retry_after_s: float = 0.0
    fail_after_chunks: int = 0
    fail_latency_ms: float = 0.0


class Adapter(ProviderAdapter):
    options_model: ClassVar[type[AdapterOptions]] = DemoOptions
    options: DemoOptions
    _calls = 0
    _control_stamp: tuple[int, int] | None = None
    _control: Mapping[str, Any] = {}

    @property
    def _latency_s(self) -> float:
        return self.settings.demo_latency_ms * self.options.latency_scale / 1000.0

    def _overrides(self) -> Mapping[str, Any]:
        """The control file's settings, re-read only when the file changes (test/demo only)."""
        path = self.options.control_file
        if not path:
            return {}
        try:
            info = os.stat(path)
        except OSError:
            self._control_stamp, self._control = None, {}
            return self._control
        stamp = (info.st_mtime_ns, info.st_size)
        if stamp != self._control_stamp:
            try:
                with open(path, "rb") as fh:
                    loaded = orjson.loads(fh.read() or b"{}")
            except (OSError, orjson.JSONDecodeError):
                return self._control  # caught mid-write: keep the previous settings
            self._control_stamp = stamp
            self._control = loaded if isinstance(loaded, dict) else {}
        return self._control

    def _next_call(self) -> tuple[Behaviour, bool]:
        """This call's behaviour and whether it fails."""
        self._calls += 1
        configured = self.options.model_dump(exclude_unset=True)
        now = behaviour(configured, self._overrides(), self._latency_s * 1000.0)
        return now, bool(now.fail_status) and self._calls % now.fail_every == 0

    async def _fail(self, how: Behaviour) -> GatewayError:
        if how.fail_latency_ms:
            await asyncio.sleep(how.fail_latency_ms / 1000.0)
        return simulated_error(how.fail_status, how.retry_after_s, self.deployment.provider)

    def _finish(
        self, request: invoke_pb2.InvokeRequest, words: list[str], call: invoke_pb2.ToolCall | None
    ) -> Completed:
        message = invoke_pb2.Message(role=invoke_pb2.ROLE_ASSISTANT)
        if call is not None:
            message.tool_calls.append(call)
            finish = FinishReason.TOOL_CALLS
            completion_tokens = 8
        else:
            message.content.add(text=" ".join(words))
            finish = (
                FinishReason.LENGTH
                if request.max_tokens and len(words) >= request.max_tokens
                else FinishReason.STOP
            )
            completion_tokens = len(words)
        usage = invoke_pb2.Usage(
            prompt_tokens=estimate_prompt_tokens(request), completion_tokens=completion_tokens
        )
        return Completed(message=message, finish_reason=finish, usage=usage)

    async def complete(self, request: invoke_pb2.InvokeRequest) -> Completed:
        how, fails = self._next_call()
        if fails:
            raise await self._fail(how)
        if how.latency_ms:
            await asyncio.sleep(how.latency_ms / 1000.0)
        if request.kind == invoke_pb2.InvokeRequest.KIND_EMBEDDING:
            return demo_embeddings(request)
        call = demo_tool_call(request)
        words = [] if call else demo_reply_words(request, self.deployment.model)
        return self._finish(request, words, call)

    async def stream(
        self, request: invoke_pb2.InvokeRequest, pace: ReadPace | None = None
    ) -> AsyncGenerator[invoke_pb2.Chunk | Completed, None]:
        how, fails = self._next_call()
        if fails and not how.fail_after_chunks:
            raise await self._fail(how)
        if how.latency_ms:
            await asyncio.sleep(how.latency_ms / 1000.0)  # time to first token
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
            if fails and seq == how.fail_after_chunks:
                raise await self._fail(how)  # mid-stream: after chunks reached the client
            if seq and delay:
                await asyncio.sleep(delay)
            yield invoke_pb2.Chunk(seq=seq, delta_text=word if seq == 0 else " " + word)
        if fails:
            raise await self._fail(how)
        yield self._finish(request, words, call)
