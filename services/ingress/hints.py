"""Routing hints, read the same way on every API. Pure functions.

Every API (native, OpenAI-compatible, Anthropic-compatible, gRPC) accepts the same hints as
HTTP headers (or gRPC metadata, whose keys are lowercase header names):

    x-switchyard-route: fast                      -> the route/model to use (overrides the body's model)
    x-switchyard-strategy: cheapest               -> a preset (balanced, fastest, cheapest, best)
    x-switchyard-strategy: latency=0.7,cost=0.3   -> explicit weights (quality, when absent, is 0)
    x-switchyard-metadata-agent: billing-bot      -> metadata["agent"] = "billing-bot"
    x-switchyard-cache: 600 | off | refresh       -> the response cache (docs/routing.md)
    Cache-Control: no-cache | no-store            -> the same, in HTTP's own words

Headers win over the same hint in the body, because they are usually set by the deployment
(a proxy, an SDK's default headers) rather than by the code that wrote the prompt.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from switchyard.errors import ErrorCode, GatewayError
from switchyard.v1 import invoke_pb2
from switchyard.vocab import StrategyPreset, is_member

ROUTE_HEADER = "x-switchyard-route"
STRATEGY_HEADER = "x-switchyard-strategy"
HEDGE_HEADER = "x-switchyard-hedge"
CACHE_HEADER = "x-switchyard-cache"
MAX_CACHE_TTL_S = 7 * 86400.0
MAX_HEDGE_DELAY_MS = 600_000.0
METADATA_PREFIX = "x-switchyard-metadata-"

STRATEGY_WEIGHTS = ("latency", "cost", "quality")
MAX_METADATA_ENTRIES = 32
MAX_METADATA_VALUE = 512
MAX_METADATA_KEY = 128
MAX_MODEL_NAME = 256


@dataclass(frozen=True)
class Strategy:
    """A preset name, or explicit weights when `preset` is empty."""

    preset: str = ""
    latency: float = 0.0
    cost: float = 0.0
    quality: float = 0.0


@dataclass(frozen=True)
class Hedge:
    """A request's hedging choice: off, or on (after its own delay when delay_ms > 0)."""

    off: bool = False
    delay_ms: float = 0.0


@dataclass(frozen=True)
class Cache:
    """A request's response-cache choice (invoke.proto CacheChoice)."""

    off: bool = False
    no_store: bool = False
    no_cache: bool = False
    ttl_s: float = 0.0


@dataclass(frozen=True)
class RoutingHints:
    route: str = ""
    strategy: Strategy | None = None
    hedge: Hedge | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    cache: Cache | None = None


def lowercase_headers(pairs: Iterable[tuple[str, str | bytes]]) -> dict[str, str]:
    """gRPC metadata (or any header pairs) as a dict with lowercase keys; binary values dropped."""
    return {k.lower(): v for k, v in pairs if isinstance(v, str)}


def parse_strategy(text: str) -> Strategy:
    """`balanced` | `fastest` | `cheapest` | `best`, or `latency=0.5,cost=0.3,quality=0.2`."""
    text = text.strip()
    if is_member(StrategyPreset, text):
        return Strategy(preset=text)
    weights: dict[str, float] = {}
    for item in text.split(","):
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or name not in STRATEGY_WEIGHTS:
            raise GatewayError(
                ErrorCode.INVALID_REQUEST,
                f"{STRATEGY_HEADER} must be one of {', '.join(StrategyPreset)} or weights like "
                f"'latency=0.5,cost=0.3,quality=0.2'; got {text!r}",
                param=STRATEGY_HEADER,
            )
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise GatewayError(
                ErrorCode.INVALID_REQUEST,
                f"{STRATEGY_HEADER}: weight {name} must be a number >= 0; got {raw.strip()!r}",
                param=STRATEGY_HEADER,
            )
        weights[name] = value
    if sum(weights.values()) <= 0:
        raise GatewayError(
            ErrorCode.INVALID_REQUEST,
            f"{STRATEGY_HEADER}: weights must not all be zero",
            param=STRATEGY_HEADER,
        )
    return Strategy(
        latency=weights.get("latency", 0.0),
        cost=weights.get("cost", 0.0),
        quality=weights.get("quality", 0.0),
    )


def parse_hedge(text: str, param: str = HEDGE_HEADER) -> Hedge:
    """`off` | `on` | a delay in milliseconds (`250` or `250ms`): docs/routing.md."""
    value = text.strip().lower()
    if value in ("off", "false", "no"):
        return Hedge(off=True)
    if value in ("on", "true", "yes"):
        return Hedge()
    try:
        delay = float(value.removesuffix("ms"))
    except ValueError:
        delay = math.nan
    if not math.isfinite(delay) or not 0 < delay <= MAX_HEDGE_DELAY_MS:
        raise GatewayError(
            ErrorCode.INVALID_REQUEST,
            f"{param} must be off, on, or a delay in milliseconds (0 < delay <= {MAX_HEDGE_DELAY_MS:.0f});"
            f" got {text.strip()[:40]!r}",
            param=param,
        )
    return Hedge(delay_ms=delay)


def parse_cache(switchyard_value: str, cache_control: str) -> Cache | None:
    """The response-cache choice of `x-switchyard-cache` (`off`, `refresh`, or a TTL in seconds:
    `600`, `600s`, `ttl=600`) and of `Cache-Control` (`no-store`, `no-cache`; other directives
    are ignored, as a cache ignores what it does not implement). None when neither says anything."""
    directives = {d.strip().split("=", 1)[0].lower() for d in cache_control.split(",") if d.strip()}
    no_store = "no-store" in directives
    no_cache = "no-cache" in directives
    value = switchyard_value.strip().lower()
    off, ttl_s = False, 0.0
    if value in ("off", "false", "no"):
        off = True
    elif value == "refresh":
        no_cache = True
    elif value:
        try:
            ttl_s = float(value.removeprefix("ttl=").removesuffix("s"))
        except ValueError:
            ttl_s = math.nan
        if not math.isfinite(ttl_s) or not 0 < ttl_s <= MAX_CACHE_TTL_S:
            raise GatewayError(
                ErrorCode.INVALID_REQUEST,
                f"{CACHE_HEADER} must be off, refresh, or a time to keep the answer in seconds "
                f"(0 < ttl <= {MAX_CACHE_TTL_S:.0f}); got {switchyard_value.strip()[:40]!r}",
                param=CACHE_HEADER,
            )
    if not (off or no_store or no_cache or ttl_s):
        return None
    return Cache(off=off, no_store=no_store, no_cache=no_cache, ttl_s=ttl_s)


def set_cache(request: invoke_pb2.InvokeRequest, cache: Cache) -> None:
    request.cache.off = cache.off
    request.cache.no_store = cache.no_store
    request.cache.no_cache = cache.no_cache
    request.cache.ttl_ms = cache.ttl_s * 1000.0


def set_hedge(request: invoke_pb2.InvokeRequest, hedge: Hedge) -> None:
    request.hedge.off = hedge.off
    request.hedge.delay_ms = hedge.delay_ms


def hints_from_headers(headers: Mapping[str, str]) -> RoutingHints:
    """The routing hints in a request's headers; GatewayError(invalid_request) when malformed.

    `headers` must have lowercase keys (Starlette's Headers and `lowercase_headers` do)."""
    route = headers.get(ROUTE_HEADER, "").strip()
    if len(route) > MAX_MODEL_NAME:
        raise GatewayError(ErrorCode.INVALID_REQUEST, f"{ROUTE_HEADER} is too long", param=ROUTE_HEADER)
    raw_strategy = headers.get(STRATEGY_HEADER, "")
    strategy = parse_strategy(raw_strategy) if raw_strategy.strip() else None
    metadata: dict[str, str] = {}
    for name, value in headers.items():
        if not name.startswith(METADATA_PREFIX):
            continue
        key = name[len(METADATA_PREFIX) :]
        if not key:
            continue
        if len(value) > MAX_METADATA_VALUE:
            raise GatewayError(
                ErrorCode.INVALID_REQUEST,
                f"{name}: metadata values are limited to {MAX_METADATA_VALUE} characters",
                param=name,
            )
        metadata[key] = value
    if len(metadata) > MAX_METADATA_ENTRIES:
        raise GatewayError(
            ErrorCode.INVALID_REQUEST,
            f"at most {MAX_METADATA_ENTRIES} {METADATA_PREFIX}* headers are allowed",
        )
    raw_hedge = headers.get(HEDGE_HEADER, "")
    hedge = parse_hedge(raw_hedge) if raw_hedge.strip() else None
    cache = parse_cache(headers.get(CACHE_HEADER, ""), headers.get("cache-control", ""))
    return RoutingHints(route=route, strategy=strategy, hedge=hedge, metadata=metadata, cache=cache)


def set_strategy(request: invoke_pb2.InvokeRequest, strategy: Strategy) -> None:
    request.ClearField("strategy")
    if strategy.preset:
        request.strategy.preset = strategy.preset
    else:
        request.strategy.explicit = True
        request.strategy.latency = strategy.latency
        request.strategy.cost = strategy.cost
        request.strategy.quality = strategy.quality


def apply_hints(request: invoke_pb2.InvokeRequest, hints: RoutingHints) -> invoke_pb2.InvokeRequest:
    """Header hints over whatever the body said."""
    if hints.route:
        request.model = hints.route
    if hints.strategy is not None:
        set_strategy(request, hints.strategy)
    if hints.hedge is not None:
        set_hedge(request, hints.hedge)
    if hints.cache is not None:
        set_cache(request, hints.cache)
    for key, value in hints.metadata.items():
        request.metadata[key] = value
    return request


def check_metadata(metadata: Mapping[str, str]) -> None:
    """The one bound on a request's metadata, whatever it came from (body, headers, gRPC):
    it rides every event and ledger row, so it stays small. GatewayError(invalid_request)."""
    if len(metadata) > MAX_METADATA_ENTRIES:
        raise GatewayError(
            ErrorCode.INVALID_REQUEST, f"metadata: at most {MAX_METADATA_ENTRIES} entries", param="metadata"
        )
    for key, value in metadata.items():
        if not key or len(key) > MAX_METADATA_KEY:
            raise GatewayError(
                ErrorCode.INVALID_REQUEST,
                f"metadata: keys are 1 to {MAX_METADATA_KEY} characters",
                param="metadata",
            )
        if len(value) > MAX_METADATA_VALUE:
            raise GatewayError(
                ErrorCode.INVALID_REQUEST,
                f"metadata.{key}: at most {MAX_METADATA_VALUE} characters",
                param=f"metadata.{key}",
            )
