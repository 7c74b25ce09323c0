"""Scoring weights: the presets, and which weights apply to a request. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from switchyard.catalog import Route
from switchyard.errors import ErrorCode, GatewayError
from switchyard.v1 import invoke_pb2
from switchyard.vocab import DEFAULT_PRESET, StrategyPreset


@dataclass(frozen=True)
class Weights:
    """How much latency, cost and quality count; always normalised to sum to 1."""

    latency: float
    cost: float
    quality: float

    @classmethod
    def of(cls, latency: float, cost: float, quality: float) -> Weights:
        parts = (latency, cost, quality)
        if any(p < 0 or p != p for p in parts):
            raise GatewayError(ErrorCode.INVALID_REQUEST, "strategy weights must be >= 0", param="strategy")
        total = sum(parts)
        if total <= 0:
            raise GatewayError(
                ErrorCode.INVALID_REQUEST, "strategy weights must not all be zero", param="strategy"
            )
        return cls(latency / total, cost / total, quality / total)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, float]) -> Weights:
        return cls.of(raw.get("latency", 0.0), raw.get("cost", 0.0), raw.get("quality", 0.0))


PRESETS: dict[str, Weights] = {
    StrategyPreset.BALANCED: Weights(0.4, 0.3, 0.3),
    StrategyPreset.FASTEST: Weights(0.8, 0.1, 0.1),
    StrategyPreset.CHEAPEST: Weights(0.1, 0.8, 0.1),
    StrategyPreset.BEST: Weights(0.1, 0.1, 0.8),
}


def preset(name: str) -> Weights:
    try:
        return PRESETS[name]
    except KeyError:
        raise GatewayError(
            ErrorCode.INVALID_REQUEST,
            f"unknown strategy {name!r}: use one of {', '.join(PRESETS)} or explicit weights",
            param="strategy",
        ) from None


def choose_weights(strategy: invoke_pb2.Strategy | None, route: Route | None) -> tuple[str, Weights]:
    """(name, weights) for a request: its own strategy wins, then the route's, then balanced.

    The name is the preset's, or "explicit" / "route:<name>" for numeric weights.
    """
    if strategy is not None and strategy.explicit:
        return "explicit", Weights.of(strategy.latency, strategy.cost, strategy.quality)
    if strategy is not None and strategy.preset:
        return strategy.preset, preset(strategy.preset)
    if route is not None and route.weights:
        return f"route:{route.name}", Weights.from_mapping(route.weights)
    if route is not None and route.strategy:
        return route.strategy, preset(route.strategy)
    return DEFAULT_PRESET, PRESETS[DEFAULT_PRESET]
