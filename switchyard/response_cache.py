"""The response cache: a repeated deterministic request answered from a stored answer, at no cost.

Why in the router: the cache is keyed on the route a request takes (docs/routing.md, "Response
cache"), and only the router knows it (rules, aliases). The router looks the key up before it
asks the budget for anything, answers a hit itself on the ingress's reply subject (the same
frames a worker would send), and records the hit as a ledger row with `cache_hit` and what the
answer cost when it was made. On a miss it writes the key into the Dispatch; the worker that
serves the request stores its successful answer under it.

The answers live in a JetStream KV bucket, so every router and ingress replica shares them;
each entry carries its own expiry (a route's TTL) under the bucket's maximum age. The key is a
digest of the normalized request, the route and the project: two projects never share an
entry, and the entry repeats its project, checked again on read.

The pure parts (`plan`, `cache_key`, `replay_frames`, `hit_response`) are tested directly;
`AnswerStore` is the bucket, shared by the router (reads) and the provider workers (writes).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass

from google.protobuf.message import DecodeError
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from switchyard import codec, subjects
from switchyard.bus import NATS_ERRORS
from switchyard.catalog import Route
from switchyard.tenancy_store import open_bucket
from switchyard.v1 import invoke_pb2

log = logging.getLogger(__name__)

KIND = invoke_pb2.InvokeRequest
CACHEABLE_KINDS = (KIND.KIND_UNSPECIFIED, KIND.KIND_CHAT, KIND.KIND_EMBEDDING)
HIT_REASON = "answered from the response cache"
# What a KV message needs besides its value (subject, headers): an entry must fit max_payload.
ENTRY_HEADROOM_BYTES = 4096


@dataclass(frozen=True)
class CachePlan:
    """What the cache may do for one request: answer it from a stored answer (`read`), and
    store its answer for `ttl_s` seconds (always, when there is a plan)."""

    ttl_s: float
    read: bool


def deterministic(request: invoke_pb2.InvokeRequest) -> bool:
    """Whether the same request gives the same answer: embeddings always; a chat request at
    temperature 0 or with a seed (the providers' own determinism knob)."""
    if request.kind == KIND.KIND_EMBEDDING:
        return True
    return (request.HasField("temperature") and request.temperature == 0) or request.HasField("seed")


def plan(route: Route | None, request: invoke_pb2.InvokeRequest) -> CachePlan | None:
    """Whether the cache takes part in `request`, from the route's policy and the request's own
    choice (`Cache-Control`, `x-switchyard-cache`); None when it does not.

    A request's own TTL opts it in on any route, whatever its temperature (the client says the
    answer may be reused). A route's TTL covers its deterministic requests only. `no-store` and
    `off` keep the cache out entirely; `no-cache` asks for a fresh answer (which is stored).
    Routes with side effects, and kinds other than chat and embeddings, are never cached."""
    choice = request.cache
    if choice.off or choice.no_store:
        return None
    if request.kind not in CACHEABLE_KINDS:
        return None
    if route is not None and route.side_effects:
        return None
    if choice.ttl_ms > 0:
        ttl_s = choice.ttl_ms / 1000.0
    elif route is not None and route.cache_ttl_s > 0 and deterministic(request):
        ttl_s = route.cache_ttl_s
    else:
        return None
    return CachePlan(ttl_s=ttl_s, read=not choice.no_cache)


def cache_key(request: invoke_pb2.InvokeRequest, route: str) -> str:
    """The KV key of `request`'s answer on `route`: a digest of what decides the answer.

    Left out: what differs between equal requests (ids, times, deadline, metadata, the key and
    agent that sent it), how the answer is delivered (stream or not, the API's dialect) and
    the client's cache and hedge choices. The model is replaced by the route it resolved to,
    so aliases of one route share answers. The project is part of the key (and its own
    prefix, so one project's entries can be listed or purged)."""
    normalized = invoke_pb2.InvokeRequest()
    normalized.CopyFrom(request)
    for name in (
        "request_id", "metadata", "project_id", "agent_id", "key_id", "deadline_unix_ms", "received_unix_ms",
        "stream", "api", "hedge", "cache",
    ):  # fmt: skip
        normalized.ClearField(name)
    normalized.model = route
    body = normalized.SerializeToString(deterministic=True)
    project = hashlib.sha256(request.project_id.encode()).hexdigest()[:16]
    digest = hashlib.sha256(
        b"%s\x00%s\x00%s" % (request.project_id.encode(), route.encode(), body)
    ).hexdigest()
    return f"p{project}.{digest}"


def stored_answer(
    response: invoke_pb2.InvokeResponse, project_id: str, ttl_ms: float, now_ms: float | None = None
) -> invoke_pb2.CachedAnswer:
    now = time.time() * 1000 if now_ms is None else now_ms
    return invoke_pb2.CachedAnswer(
        response=response, stored_unix_ms=now, expires_unix_ms=now + ttl_ms, project_id=project_id
    )


def usable(entry: invoke_pb2.CachedAnswer, project_id: str, now_ms: float) -> bool:
    """A stored answer may answer a request of `project_id` now: its own project, not expired."""
    return entry.project_id == project_id and now_ms < entry.expires_unix_ms


def hit_response(
    entry: invoke_pb2.CachedAnswer, request: invoke_pb2.InvokeRequest, route: str, now_ms: float
) -> invoke_pb2.InvokeResponse:
    """The answer a hit gets: the stored one under this request's id, at no cost, with no
    upstream attempt, and a rationale that says where it came from. `usage` stays what the
    answer took to make (the tokens the text stands for); `cost_usd` is what this request costs."""
    stored = entry.response
    response = invoke_pb2.InvokeResponse(
        request_id=request.request_id,
        provider=stored.provider,
        model=stored.model,
        deployment_id=stored.deployment_id,
        message=stored.message,
        finish_reason=stored.finish_reason,
        usage=stored.usage,
        cost_usd="0",
        latency_ms=max(now_ms - request.received_unix_ms, 0.0),
        route=route,
        embeddings=stored.embeddings,
    )
    response.ttft_ms = response.latency_ms
    response.rationale.route = route
    response.rationale.winner = stored.deployment_id
    response.rationale.reason = f"{HIT_REASON} (stored {(now_ms - entry.stored_unix_ms) / 1000:.0f} s ago)"
    return response


def replay_frames(response: invoke_pb2.InvokeResponse, stream: bool) -> list[bytes]:
    """The reply frames of a hit, encoded as a worker sends them: the final answer alone, or
    (streamed) one chunk with the whole text and tool calls, then the final frame."""
    final = codec.final_frame(response)
    if not stream:
        return [final]
    chunk = invoke_pb2.Chunk(seq=0)
    chunk.delta_text = "".join(
        part.text for part in response.message.content if part.WhichOneof("part") == "text"
    )
    for index, call in enumerate(response.message.tool_calls):
        chunk.tool_calls.add(index=index, id=call.id, name=call.name, arguments_delta=call.arguments_json)
    return [codec.chunk_frame(chunk), final]


class AnswerStore:
    """The response cache's bucket. Reads and writes never fail a request: a cache that cannot
    answer is a miss, an answer that cannot be stored is served anyway (both are logged)."""

    def __init__(self, kv: KeyValue, max_entry_bytes: int) -> None:
        self.kv = kv
        self.max_entry_bytes = max_entry_bytes

    @classmethod
    async def open(
        cls, js: JetStreamContext, replicas: int, max_age_s: float, max_bytes: int, max_entry_bytes: int
    ) -> AnswerStore:
        kv = await open_bucket(
            js, subjects.RESPONSE_CACHE_BUCKET, replicas, ttl_s=max_age_s, max_bytes=max_bytes
        )
        return cls(kv, max_entry_bytes)

    async def get(self, key: str) -> invoke_pb2.CachedAnswer | None:
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return None
        except NATS_ERRORS as exc:
            log.warning("response cache read failed (%s): served as a miss", type(exc).__name__)
            return None
        if not entry.value:
            return None
        try:
            return invoke_pb2.CachedAnswer.FromString(entry.value)
        except DecodeError:
            log.warning("response cache entry %s is not a CachedAnswer: served as a miss", key)
            return None

    async def put(self, key: str, answer: invoke_pb2.CachedAnswer) -> bool:
        payload = answer.SerializeToString()
        if len(payload) > self.max_entry_bytes:
            return False  # larger than the bus carries in one message: not cached
        try:
            await self.kv.put(key, payload)
        except NATS_ERRORS as exc:
            log.warning("response cache write failed (%s): the answer is not cached", type(exc).__name__)
            return False
        return True
