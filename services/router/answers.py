"""The router's side of the response cache (switchyard/response_cache.py): look a request up
before routing it, answer a hit on the ingress's reply subject, record the hit in the ledger.

A hit skips the budget authority and every worker: it costs nothing, so nothing is reserved,
and it is answered from one KV read. A miss goes on as usual, its Dispatch carrying the key and
TTL under which the worker stores the answer.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from prometheus_client import Counter

from switchyard import subjects, telemetry
from switchyard.bus import EventPublisher
from switchyard.catalog import Catalog
from switchyard.completions import completion_event
from switchyard.errors import GatewayError
from switchyard.response_cache import AnswerStore, cache_key, hit_response, plan, replay_frames, usable
from switchyard.v1 import invoke_pb2
from switchyard.vocab import Status

from .rules import Features, features_of, first_match

LOOKUPS = Counter(
    "switchyard_response_cache_lookups_total",
    "Response cache lookups by route and result",
    ["route", "result"],
)


@dataclass(frozen=True)
class Lookup:
    """A cacheable request: its key, its TTL, and the stored answer when there is one."""

    key: str
    ttl_ms: float
    route: str
    # Computed for the lookup; routing a miss reuses them (the prompt's token estimate is the
    # costly part, and it would be counted twice).
    features: Features
    answer: invoke_pb2.CachedAnswer | None = None


class CachedAnswers:
    def __init__(self, catalog: Catalog, store: AnswerStore) -> None:
        self.catalog = catalog
        self.store = store
        # Nothing to look up unless some route caches or the request asks: a catalog with no
        # cache costs an uncached request one attribute check.
        self.any_route = any(route.cache_ttl_s > 0 for route in catalog.routes.values())

    def route_of(self, request: invoke_pb2.InvokeRequest, features: Features) -> str:
        """The route the router will take (aliases and rules applied, as Router.decide)."""
        requested, _ = self.catalog.resolve(request.model)
        rule = first_match(self.catalog.rules, requested, features)
        if rule is not None:
            requested, _ = self.catalog.resolve(rule.route)
        return requested

    async def lookup(self, request: invoke_pb2.InvokeRequest) -> Lookup | None:
        """None when the cache takes no part in this request; else its key, and the answer
        when a usable one is stored (and the request may be answered from the cache)."""
        if not self.any_route and request.cache.ttl_ms <= 0:
            return None
        features = features_of(request)
        try:
            route = self.route_of(request, features)
        except GatewayError:
            return None  # an unknown model: routing answers it as it would anyway
        cache_plan = plan(self.catalog.route(route), request)
        if cache_plan is None:
            return None
        key = cache_key(request, route)
        found = Lookup(key=key, ttl_ms=cache_plan.ttl_s * 1000.0, route=route, features=features)
        if not cache_plan.read:
            LOOKUPS.labels(route, "refresh").inc()
            return found
        entry = await self.store.get(key)
        if entry is None or not usable(entry, request.project_id, time.time() * 1000):
            LOOKUPS.labels(route, "miss").inc()
            return found
        LOOKUPS.labels(route, "hit").inc()
        return replace(found, answer=entry)

    async def answer(
        self,
        send_frame: Callable[[str, bytes], Awaitable[None]],
        events: EventPublisher,
        request: invoke_pb2.InvokeRequest,
        reply_to: str,
        found: Lookup,
    ) -> None:
        """Answer a hit: the frames to the ingress, then the ledger's record of it (cost 0, the
        stored answer's cost as the saving). The record is published like a router's refusal:
        nothing was spent, so the answer does not wait for it to be stored."""
        assert found.answer is not None
        now_ms = time.time() * 1000
        response = hit_response(found.answer, request, found.route, now_ms)
        response.cache_hit = True
        for frame in replay_frames(response, request.stream):
            await send_frame(reply_to, frame)
        event = completion_event(
            request, status=Status.OK, trace_id=telemetry.current_trace_id(), response=response
        )
        event.route = found.route
        event.provider, event.model, event.deployment_id = (
            response.provider,
            response.model,
            response.deployment_id,
        )
        event.rationale.CopyFrom(response.rationale)
        event.cache_hit = True
        event.cost_saved_usd = found.answer.response.cost_usd or "0"
        event.ttft_ms = response.ttft_ms
        events.publish(
            subjects.COMPLETION,
            event.SerializeToString(),
            msg_id=request.request_id,
            headers=telemetry.inject_headers(),
        )
