"""Deployments, routes and aliases: what a request's `model` can name, and what it costs.

Pure: `build_catalog(config, env)` turns a parsed TOML document and an environment mapping
into a Catalog; nothing here reads files or the network, so it is tested directly.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from switchyard import provider_defaults
from switchyard.errors import GatewayError
from switchyard.pricing import Price

BUILTIN_ROUTES = ("auto", "fast", "cheap", "best")
STRATEGY_PRESETS = ("balanced", "fastest", "cheapest", "best")
WEIGHT_NAMES = ("latency", "cost", "quality")


@dataclass(frozen=True)
class Timeouts:
    connect_s: float = 5.0
    first_byte_s: float = 60.0
    between_chunks_s: float = 30.0
    total_s: float = 300.0


@dataclass(frozen=True)
class ProviderLimits:
    """The provider's rate limits for one deployment (its key and model); 0 = no limit.
    Enforced by the budget authority across every router and worker (docs/quotas.md)."""

    rpm: int = 0  # requests per minute
    tpm: int = 0  # input + output tokens per minute (how OpenAI counts)
    input_tpm: int = 0  # input (prompt) tokens per minute
    output_tpm: int = 0  # output (completion) tokens per minute
    max_concurrent: int = 0  # requests in flight at once

    @property
    def any(self) -> bool:
        return bool(self.rpm or self.tpm or self.input_tpm or self.output_tpm or self.max_concurrent)


LIMIT_NAMES = ("rpm", "tpm", "input_tpm", "output_tpm", "max_concurrent")


@dataclass(frozen=True)
class Deployment:
    """One upstream model behind one set of credentials.

    `provider` names the worker pool (subject provider.<provider>.invoke); `adapter` names the
    wire format (demo, openai, anthropic, gemini, mistral, openai_compat).
    """

    id: str
    provider: str
    model: str
    adapter: str
    price: Price = field(default_factory=Price)
    quality: float = 0.5
    base_url: str = ""
    api_key: str = field(default="", repr=False)
    timeouts: Timeouts = field(default_factory=Timeouts)
    options: Mapping[str, Any] = field(default_factory=dict)
    limits: ProviderLimits = field(default_factory=ProviderLimits)
    # The most output tokens one call can produce (0: unknown): what a budget reserves for a
    # request that sets no max_tokens (docs/budgets.md).
    max_output_tokens: int = 0

    @property
    def qualified_model(self) -> str:
        return f"{self.provider}/{self.model}"


@dataclass(frozen=True)
class Route:
    name: str
    deployments: tuple[str, ...]
    strategy: str = "balanced"
    # Explicit scoring weights ({"latency": .., "cost": .., "quality": ..}); win over `strategy`.
    weights: Mapping[str, float] | None = None


@dataclass(frozen=True)
class Rule:
    """Send matching requests to `route` (a route, alias or model). Every condition given must
    hold; None means "don't care". See docs/routing.md."""

    name: str
    route: str
    applies_to: tuple[str, ...] = ("auto",)  # requested routes it may redirect; "*" = any
    metadata: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # key -> allowed values
    min_prompt_tokens: int | None = None
    max_prompt_tokens: int | None = None
    tools: bool | None = None
    images: bool | None = None
    last_user_regex: re.Pattern[str] | None = None


@dataclass(frozen=True)
class Catalog:
    deployments: Mapping[str, Deployment]
    routes: Mapping[str, Route]
    aliases: Mapping[str, str] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()

    def route(self, name: str) -> Route | None:
        """The route called `name` (after alias lookup), None for a concrete model."""
        return self.routes.get(self.aliases.get(name, name))

    def providers(self) -> list[str]:
        return sorted({d.provider for d in self.deployments.values()})

    def resolve(self, model: str) -> tuple[str, list[Deployment]]:
        """Map a request's `model` to (route name, candidate deployments).

        Order of lookup: alias, route, deployment id, "<provider>/<model>".
        """
        name = self.aliases.get(model, model)
        if name in self.routes:
            route = self.routes[name]
            return route.name, [self.deployments[d] for d in route.deployments]
        if name in self.deployments:
            return name, [self.deployments[name]]
        matches = [d for d in self.deployments.values() if d.qualified_model == name]
        if matches:
            return name, matches
        raise GatewayError(
            "model_not_found",
            f"unknown model {model!r}: name a route ({', '.join(sorted(self.routes))}), "
            "an alias, or <provider>/<model> of a configured deployment",
            param="model",
        )

    def model_names(self) -> list[str]:
        names = set(self.routes) | set(self.aliases)
        names |= {d.qualified_model for d in self.deployments.values()}
        return sorted(names)


def demo_deployments() -> list[Deployment]:
    """The built-in demo provider: two models with different speed, price and quality so that
    routing has a real choice to make with no API keys."""
    return [
        Deployment(
            id="demo/fast",
            provider="demo",
            model="fast",
            adapter="demo",
            price=Price.of("0.10", "0.40", "0.05"),
            quality=0.55,
            options={"latency_scale": 1.0},
        ),
        Deployment(
            id="demo/smart",
            provider="demo",
            model="smart",
            adapter="demo",
            price=Price.of("2.50", "10.00", "1.25"),
            quality=0.9,
            options={"latency_scale": 3.0},
        ),
    ]


def _price(raw: Mapping[str, Any] | None) -> Price:
    raw = raw or {}
    return Price.of(raw.get("input", 0), raw.get("output", 0), raw.get("cached_input"))


def _deployment(raw: Mapping[str, Any], env: Mapping[str, str]) -> Deployment:
    try:
        provider = str(raw["provider"])
        model = str(raw["model"])
    except KeyError as exc:
        raise ValueError(f"deployment {raw!r} lacks {exc.args[0]!r}") from exc
    api_key = str(raw.get("api_key", "")) or env.get(str(raw.get("api_key_env", "")), "")
    t = raw.get("timeouts", {})
    return Deployment(
        id=str(raw.get("id", f"{provider}/{model}")),
        provider=provider,
        model=model,
        adapter=str(raw.get("adapter", provider)),
        price=_price(raw.get("price")),
        quality=float(raw.get("quality", 0.5)),
        base_url=str(raw.get("base_url", "")),
        api_key=api_key,
        timeouts=Timeouts(**{k: float(v) for k, v in t.items()}),
        options=dict(raw.get("options", {})),
        limits=_limits(raw.get("id", f"{provider}/{model}"), raw.get("limits")),
        max_output_tokens=int(raw.get("max_output_tokens", 0)),
    )


def _limits(deployment: str, raw: Any) -> ProviderLimits:
    if raw is None:
        return ProviderLimits()
    if not isinstance(raw, Mapping) or set(raw) - set(LIMIT_NAMES):
        raise ValueError(f"deployment {deployment!r}: limits must be a table of {', '.join(LIMIT_NAMES)}")
    values = {}
    for name, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"deployment {deployment!r}: limits.{name} must be a whole number >= 0")
        values[name] = value
    return ProviderLimits(**values)


def build_catalog(config: Mapping[str, Any], env: Mapping[str, str]) -> Catalog:
    """Built-in demo deployments + configured ones; built-in routes span every deployment
    unless the config defines them."""
    deployments: dict[str, Deployment] = {}
    if config.get("demo", {}).get("enabled", True):
        deployments.update((d.id, d) for d in demo_deployments())
    for raw in config.get("deployments", []):
        # Known providers fill in price, base URL and key variable (switchyard/provider_defaults.py).
        raw = provider_defaults.configured_deployment(raw, config, env)
        dep = _deployment(raw, env)
        if raw.get("api_key_env") and not dep.api_key and raw.get("require_key", True):
            continue  # a provider whose key is absent stays off
        deployments[dep.id] = dep
    for raw in provider_defaults.discovered_deployments(config, env):
        if raw["id"] not in deployments:  # a provider whose key is present is on
            deployments[raw["id"]] = _deployment(raw, env)

    routes: dict[str, Route] = {}
    all_ids = tuple(deployments)
    for name in BUILTIN_ROUTES:
        routes[name] = Route(
            name,
            all_ids,
            strategy={"fast": "fastest", "cheap": "cheapest", "best": "best"}.get(name, "balanced"),
        )
    for name, raw in config.get("routes", {}).items():
        ids = tuple(raw.get("deployments", []))
        missing = [d for d in ids if d not in deployments]
        ids = tuple(d for d in ids if d in deployments)
        if not ids:
            if missing:
                continue  # every deployment of the route is off (no key): the route is off too
            raise ValueError(f"route {name!r} lists no deployments")
        routes[name] = Route(
            name,
            ids,
            strategy=_strategy(name, raw.get("strategy")),
            weights=_weights(name, raw.get("weights")),
        )
    aliases = {str(k): str(v) for k, v in config.get("aliases", {}).items()}
    catalog = Catalog(deployments=deployments, routes=routes, aliases=aliases)
    disabled = set(config.get("routes", {})) - set(routes)
    rules = tuple(
        rule for raw in config.get("rules", []) if (rule := _rule(raw, catalog, disabled)) is not None
    )
    return Catalog(deployments=deployments, routes=routes, aliases=aliases, rules=rules)


def _strategy(route: str, raw: Any) -> str:
    name = str(raw if raw is not None else "balanced")
    if name not in STRATEGY_PRESETS:
        raise ValueError(f"route {route!r}: strategy {name!r} is not one of {', '.join(STRATEGY_PRESETS)}")
    return name


def _weights(route: str, raw: Any) -> dict[str, float] | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or set(raw) - set(WEIGHT_NAMES):
        raise ValueError(f"route {route!r}: weights must be a table of {', '.join(WEIGHT_NAMES)}")
    weights = {k: float(v) for k, v in raw.items()}
    if any(v < 0 for v in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"route {route!r}: weights must be >= 0 and not all zero")
    return weights


RULE_MATCH_KEYS = frozenset(
    {"metadata", "min_prompt_tokens", "max_prompt_tokens", "tools", "images", "last_user_regex"}
)


def _rule(raw: Mapping[str, Any], catalog: Catalog, disabled_routes: set[str]) -> Rule | None:
    """One `[[rules]]` entry; None when its target route is off (its deployments lack keys)."""
    name = str(raw.get("name", ""))
    target = str(raw.get("route", ""))
    if not name or not target:
        raise ValueError(f"rule {raw!r} needs a name and a route")
    if target in disabled_routes:
        return None
    try:
        catalog.resolve(target)
    except GatewayError:
        raise ValueError(f"rule {name!r} routes to unknown {target!r}") from None
    match = raw.get("match", {})
    unknown = set(match) - RULE_MATCH_KEYS
    if unknown:
        # A misspelt condition must not silently match every request.
        raise ValueError(f"rule {name!r}: unknown match key(s) {', '.join(sorted(unknown))}")
    applies_to = raw.get("applies_to", ["auto"])
    if isinstance(applies_to, str):
        applies_to = [applies_to]
    metadata = {
        str(k): tuple(str(x) for x in (v if isinstance(v, list) else [v]))
        for k, v in match.get("metadata", {}).items()
    }
    regex = match.get("last_user_regex")
    try:
        pattern = re.compile(str(regex)) if regex is not None else None
    except re.error as exc:
        raise ValueError(f"rule {name!r}: bad last_user_regex: {exc}") from None

    def optional(key: str, kind: type) -> Any:
        return None if match.get(key) is None else kind(match[key])

    return Rule(
        name=name,
        route=target,
        applies_to=tuple(str(a) for a in applies_to),
        metadata=metadata,
        min_prompt_tokens=optional("min_prompt_tokens", int),
        max_prompt_tokens=optional("max_prompt_tokens", int),
        tools=optional("tools", bool),
        images=optional("images", bool),
        last_user_regex=pattern,
    )


def read_config(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def load_catalog(path: Path | None, env: Mapping[str, str]) -> Catalog:
    return build_catalog(read_config(path), env)
