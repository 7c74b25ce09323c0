"""The router's tuning knobs, read from the `[router]` table of the TOML config. Pure.

A pydantic model that forbids unknown keys: a misspelt knob stops the router's start with
`router.<key>: unknown setting` (switchyard/config.py) instead of being ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import model_validator

from switchyard.config import DEFAULT_MAX_ATTEMPTS, Table, validated


class RouterTuning(Table):
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
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    # Output tokens assumed when estimating cost (capped by the request's max_tokens).
    expected_output_tokens: int = 256

    @model_validator(mode="after")
    def _sensible(self) -> RouterTuning:
        for name in ("latency_decay_s", "error_half_life_s", "breaker_open_s", "breaker_max_open_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if not 0 < self.error_alpha <= 1:
            raise ValueError("error_alpha must be in (0, 1]")
        for name in ("breaker_failures", "half_open_probes", "max_attempts", "expected_output_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.latency_floor_ms < 0 or self.rate_limit_cooldown_s < 0:
            raise ValueError("latency_floor_ms and rate_limit_cooldown_s must be >= 0")
        return self


def tuning_from_config(config: Mapping[str, Any]) -> RouterTuning:
    """The `[router]` table as RouterTuning; ConfigError (a ValueError) names a bad key."""
    return validated(RouterTuning, config.get("router", {}), "router")
