"""Requests this router has in flight per deployment. Pure (the caller passes `now`).

The router counts a request when it hands it off and releases it when the worker's
ProviderStat for that request and deployment arrives. Workers send their stats once per
`SWITCHYARD_WORKER_STATS_S` (0.1 s), so a finished request stays counted up to that long: the
count leads the truth by at most the requests a deployment finishes in one interval, the same
for every deployment relative to its rate. A sample that never comes (a worker killed mid-call)
must not pin the count forever, so each entry expires at the request's deadline.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Inflight:
    _entries: dict[tuple[str, str], float] = field(default_factory=dict)  # (request, deployment) -> expiry
    _expiries: list[tuple[float, str, str]] = field(default_factory=list)  # heap
    _counts: Counter[str] = field(default_factory=Counter)
    _probes: Counter[str] = field(default_factory=Counter)
    _probe_keys: set[tuple[str, str]] = field(default_factory=set)

    def start(self, request_id: str, deployment_id: str, expires_s: float, probe: bool = False) -> None:
        key = (request_id, deployment_id)
        if key in self._entries:
            return
        self._entries[key] = expires_s
        heapq.heappush(self._expiries, (expires_s, request_id, deployment_id))
        self._counts[deployment_id] += 1
        if probe:
            self._probe_keys.add(key)
            self._probes[deployment_id] += 1

    def finish(self, request_id: str, deployment_id: str) -> bool:
        """Release one request; False when it was not counted here (another router's)."""
        key = (request_id, deployment_id)
        if self._entries.pop(key, None) is None:
            return False
        self._release(key)
        return True

    def _release(self, key: tuple[str, str]) -> None:
        deployment_id = key[1]
        self._counts[deployment_id] -= 1
        if self._counts[deployment_id] <= 0:
            del self._counts[deployment_id]
        if key in self._probe_keys:
            self._probe_keys.discard(key)
            self._probes[deployment_id] -= 1
            if self._probes[deployment_id] <= 0:
                del self._probes[deployment_id]

    def expire(self, now_s: float) -> None:
        while self._expiries and self._expiries[0][0] <= now_s:
            expires_s, request_id, deployment_id = heapq.heappop(self._expiries)
            key = (request_id, deployment_id)
            if self._entries.get(key) == expires_s:
                del self._entries[key]
                self._release(key)

    def count(self, deployment_id: str) -> int:
        return self._counts.get(deployment_id, 0)

    def probes(self, deployment_id: str) -> int:
        return self._probes.get(deployment_id, 0)

    def __len__(self) -> int:
        return len(self._entries)
