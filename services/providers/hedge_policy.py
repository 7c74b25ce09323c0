"""The worker's half of the hedging policy: may an armed hedge fire now? Pure (callers pass `now`).

The router arms a hedge (services/router/hedging.py); the worker running the dispatch fires it
when the first attempt has no first token after the delay, unless that would take the share of
the route's requests hedged by this worker over the last `window_s` past `max_share`. Each
worker capping its own share caps the whole gateway's: if every worker hedges at most 10 % of
the requests it serves, all of them together hedge at most 10 % of all requests. The cost of
this choice: a worker that has seen few requests of a route hedges few of them (1 in 10 needs
10 requests seen).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

# Window resolution: counts are kept per bucket of this many seconds.
BUCKET_S = 1.0


@dataclass
class RouteWindow:
    """Requests and hedges of one route, per bucket, over the last window."""

    buckets: deque[list[float]] = field(default_factory=deque)  # [bucket start, requests, hedges]
    requests: int = 0
    hedges: int = 0

    def trim(self, now: float, window_s: float) -> None:
        while self.buckets and self.buckets[0][0] <= now - window_s - BUCKET_S:
            _, requests, hedges = self.buckets.popleft()
            self.requests -= int(requests)
            self.hedges -= int(hedges)

    def add(self, now: float, requests: int, hedges: int) -> None:
        start = math.floor(now / BUCKET_S) * BUCKET_S
        if not self.buckets or self.buckets[-1][0] != start:
            self.buckets.append([start, 0, 0])
        self.buckets[-1][1] += requests
        self.buckets[-1][2] += hedges
        self.requests += requests
        self.hedges += hedges


class HedgeWindow:
    """Per route, the armed requests this worker ran and the hedges it fired, in a sliding
    window; `may_fire` keeps hedges / requests <= max_share, the new hedge counted."""

    def __init__(self) -> None:
        self.routes: dict[str, RouteWindow] = {}

    def _route(self, route: str, now: float, window_s: float) -> RouteWindow:
        window = self.routes.setdefault(route, RouteWindow())
        window.trim(now, window_s)
        return window

    def armed(self, route: str, now: float, window_s: float) -> None:
        """An armed request started here (hedged or not, it counts in the share's denominator)."""
        self._route(route, now, window_s).add(now, 1, 0)

    def may_fire(self, route: str, max_share: float, window_s: float, now: float) -> bool:
        """Would one more hedge keep the route's hedged share within `max_share`?"""
        window = self._route(route, now, window_s)
        return window.hedges + 1 <= max_share * max(window.requests, 1) + 1e-9

    def fired(self, route: str, now: float, window_s: float) -> None:
        self._route(route, now, window_s).add(now, 0, 1)

    def share(self, route: str, now: float, window_s: float) -> float:
        window = self._route(route, now, window_s)
        return window.hedges / window.requests if window.requests else 0.0
