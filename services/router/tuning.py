"""The router's tuning knobs, read from the `[router]` table of the TOML config. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class RouterTuning:
    # Peak EWMA: how fast an estimate forgets (time constant, seconds). An estimate also decays
    # toward zero while no sample arrives, so a deployment that lost traffic is retried later.
    latency_decay_s: float = 10.0
    # Estimates below this count as this much, so an unmeasured (or long-unmeasured)
    # deployment does not make every measured one look infinitely slow.
    latency_floor_ms: float = 10.0
    # Error-rate EWMA: weight of each new sample, and its half-life while no sample arrives.
    error_alpha: float = 0.2
    error_half_life_s: float = 30.0
    # Circuit breaker: opens after this many consecutive failures, stays open open_s, doubling
    # after each failed half-open probe up to max_open_s.
    breaker_failures: int = 5
    breaker_open_s: float = 10.0
    breaker_max_open_s: float = 120.0
    # Trial requests one router lets through a half-open breaker at the same time.
    half_open_probes: int = 1
    # A 429 without Retry-After keeps the deployment aside this long.
    rate_limit_cooldown_s: float = 1.0
    # The retry budget: the most upstream attempts one request may make (chain length).
    max_attempts: int = 3
    # Output tokens assumed when estimating cost (capped by the request's max_tokens).
    expected_output_tokens: int = 256

    def __post_init__(self) -> None:
        for name in ("latency_decay_s", "error_half_life_s", "breaker_open_s", "breaker_max_open_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"[router] {name} must be > 0")
        if not 0 < self.error_alpha <= 1:
            raise ValueError("[router] error_alpha must be in (0, 1]")
        for name in ("breaker_failures", "half_open_probes", "max_attempts", "expected_output_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"[router] {name} must be >= 1")
        if self.latency_floor_ms < 0 or self.rate_limit_cooldown_s < 0:
            raise ValueError("[router] latency_floor_ms and rate_limit_cooldown_s must be >= 0")


def tuning_from_config(config: Mapping[str, Any]) -> RouterTuning:
    raw = dict(config.get("router", {}))
    known = {f.name: f.type for f in fields(RouterTuning)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValueError(f"[router] unknown setting(s): {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        kind = int if known[name] == "int" else float
        try:
            values[name] = kind(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"[router] {name} must be a number, not {value!r}") from exc
    return RouterTuning(**values)
