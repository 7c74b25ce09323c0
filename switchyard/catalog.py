"""Deployments, routes and aliases: what a request's `model` can name, and what it costs.

Pure: `build_catalog(config, env)` turns a parsed TOML document and an environment mapping
into a Catalog; nothing here reads files or the network, so it is tested directly. The
document is first checked against its schema (switchyard/config.py): an unknown or mistyped
key stops the start with a ConfigError naming it.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from switchyard import provider_defaults
from switchyard.config import (
    ConfigError,
    DeploymentConfig,
    DowngradeConfig,
    HedgeConfig,
    PriceConfig,
    RuleConfig,
    parse_config,
    validated,
)
from switchyard.errors import ErrorCode, GatewayError
from switchyard.pricing import Price
from switchyard.v1 import invoke_pb2
from switchyard.vocab import DEFAULT_PRESET, DeploymentKind, StrategyPreset

BUILTIN_ROUTES = ("auto", "fast", "cheap", "best")
# The adapters that speak an embeddings API (services/providers/adapters).
EMBEDDING_ADAPTERS = ("demo", "openai", "openai_compat", "mistral", "gemini")
# The built-in routes other than `auto` (balanced) each stand for one preset.
BUILTIN_ROUTE_PRESETS = {
    "fast": StrategyPreset.FASTEST,
    "cheap": StrategyPreset.CHEAPEST,
    "best": StrategyPreset.BEST,
}


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
    kind: DeploymentKind = DeploymentKind.CHAT  # what it serves (docs/configuration.md)

    @property
    def qualified_model(self) -> str:
        return f"{self.provider}/{self.model}"

    def serves(self, request_kind: int) -> bool:
        """Whether this deployment can take a request of this InvokeRequest.Kind: embedding
        deployments take embedding requests, chat deployments every other kind."""
        wants_embedding = request_kind == invoke_pb2.InvokeRequest.KIND_EMBEDDING
        return wants_embedding == (self.kind == DeploymentKind.EMBEDDING)


@dataclass(frozen=True)
class Route:
    name: str
    deployments: tuple[str, ...]
    strategy: str = DEFAULT_PRESET
    # Explicit scoring weights ({"latency": .., "cost": .., "quality": ..}); win over `strategy`.
    weights: Mapping[str, float] | None = None
    hedge: HedgeConfig | None = None  # the hedging policy (None: hedge only when a request asks)
    side_effects: bool = False  # never hedged nor answered from the response cache
    cache_ttl_s: float = 0.0  # the response cache's TTL (0: only requests that ask are cached)
    downgrade: DowngradeConfig | None = None  # budget-aware downgrade (services/router/downgrade.py)


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
            ErrorCode.MODEL_NOT_FOUND,
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


def demo_embedding_deployments() -> list[Deployment]:
    """The demo's embedding model: deterministic vectors (a hash-seeded unit vector per input),
    so `make run` answers /v1/embeddings with no key."""
    return [
        Deployment(
            id="demo/embed",
            provider="demo",
            model="embed",
            adapter="demo",
            price=Price.of("0.02", "0"),
            quality=0.5,
            kind=DeploymentKind.EMBEDDING,
        ),
    ]


def _price(config: PriceConfig | None) -> Price:
    config = config or PriceConfig()
    return Price.of(
        config.input, config.output, config.cached_input, config.cache_write, config.cache_write_1h
    )


def _deployment(raw: Mapping[str, Any], env: Mapping[str, str]) -> tuple[Deployment, DeploymentConfig]:
    """A deployment entry (completed by the provider defaults) as a Deployment."""
    config = validated(DeploymentConfig, raw, f"deployments[{_entry_name(raw)}]")
    api_key = config.api_key or env.get(config.api_key_env, "")
    deployment = Deployment(
        id=config.deployment_id,
        provider=config.provider,
        model=config.model,
        adapter=config.adapter or config.provider,
        price=_price(config.price),
        quality=config.quality,
        base_url=config.base_url,
        api_key=api_key,
        timeouts=Timeouts(**config.timeouts.model_dump(exclude_none=True)),
        options=dict(config.options),
        limits=ProviderLimits(**config.limits.model_dump()),
        max_output_tokens=config.max_output_tokens,
        kind=config.kind,
    )
    if deployment.kind == DeploymentKind.EMBEDDING and deployment.adapter not in EMBEDDING_ADAPTERS:
        raise ConfigError(
            f"deployments[{deployment.id}].kind: adapter {deployment.adapter!r} serves no embeddings "
            f"(embedding adapters: {', '.join(EMBEDDING_ADAPTERS)})"
        )
    return deployment, config


def _entry_name(raw: Mapping[str, Any]) -> str:
    return str(raw.get("id") or f"{raw.get('provider')}/{raw.get('model')}")


def build_catalog(config: Mapping[str, Any], env: Mapping[str, str]) -> Catalog:
    """Built-in demo deployments + configured ones; built-in routes span every deployment
    unless the config defines them. Raises ConfigError (a ValueError) for a config that
    cannot run."""
    document = parse_config(config)
    deployments: dict[str, Deployment] = {}
    if document.demo.enabled:
        deployments.update((d.id, d) for d in demo_deployments() + demo_embedding_deployments())
    for raw in config.get("deployments", []):
        # Known providers fill in price, base URL and key variable (switchyard/provider_defaults.py).
        completed = provider_defaults.configured_deployment(raw, config, env)
        dep, entry = _deployment(completed, env)
        if entry.api_key_env and not dep.api_key and entry.require_key:
            continue  # a provider whose key is absent stays off
        deployments[dep.id] = dep
    for raw in provider_defaults.discovered_deployments(config, env):
        if raw["id"] not in deployments:  # a provider whose key is present is on
            deployments[raw["id"]] = _deployment(raw, env)[0]

    routes: dict[str, Route] = {}
    all_ids = tuple(deployments)
    for name in BUILTIN_ROUTES:
        routes[name] = Route(
            name,
            all_ids,
            strategy=BUILTIN_ROUTE_PRESETS.get(name, DEFAULT_PRESET),
        )
    for name, route in document.routes.items():
        ids = tuple(route.deployments)
        missing = [d for d in ids if d not in deployments]
        ids = tuple(d for d in ids if d in deployments)
        if not ids:
            if missing:
                continue  # every deployment of the route is off (no key): the route is off too
            raise ConfigError(f"routes.{name}: route {name!r} lists no deployments")
        routes[name] = Route(
            name,
            ids,
            strategy=route.strategy,
            weights=route.weights,
            hedge=route.hedge if route.hedge is not None and route.hedge.enabled else None,
            side_effects=route.side_effects,
            cache_ttl_s=route.cache.ttl_s if route.cache is not None and route.cache.enabled else 0.0,
            downgrade=route.downgrade,
        )
    aliases = dict(document.aliases)
    catalog = Catalog(deployments=deployments, routes=routes, aliases=aliases)
    disabled = set(document.routes) - set(routes)
    rules = tuple(rule for entry in document.rules if (rule := _rule(entry, catalog, disabled)) is not None)
    return Catalog(deployments=deployments, routes=routes, aliases=aliases, rules=rules)


def _rule(config: RuleConfig, catalog: Catalog, disabled_routes: set[str]) -> Rule | None:
    """One `[[rules]]` entry; None when its target route is off (its deployments lack keys)."""
    if config.route in disabled_routes:
        return None
    try:
        catalog.resolve(config.route)
    except GatewayError:
        raise ConfigError(
            f"rules[{config.name}].route: rule {config.name!r} routes to unknown {config.route!r}"
        ) from None
    match = config.match
    applies_to = [config.applies_to] if isinstance(config.applies_to, str) else config.applies_to
    metadata = {k: tuple(v if isinstance(v, list) else [v]) for k, v in match.metadata.items()}
    regex = match.last_user_regex
    return Rule(
        name=config.name,
        route=config.route,
        applies_to=tuple(applies_to),
        metadata=metadata,
        min_prompt_tokens=match.min_prompt_tokens,
        max_prompt_tokens=match.max_prompt_tokens,
        tools=match.tools,
        images=match.images,
        last_user_regex=re.compile(regex) if regex is not None else None,
    )


def read_config(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def load_catalog(path: Path | None, env: Mapping[str, str]) -> Catalog:
    """The catalog of the config file; ConfigError names the file and each bad key."""
    try:
        return build_catalog(read_config(path), env)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
