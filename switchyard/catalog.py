"""Deployments, routes and aliases: what a request's `model` can name, and what it costs.

Pure: `build_catalog(config, env)` turns a parsed TOML document and an environment mapping
into a Catalog; nothing here reads files or the network, so it is tested directly.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from switchyard import provider_defaults
from switchyard.errors import GatewayError
from switchyard.pricing import Price

BUILTIN_ROUTES = ("auto", "fast", "cheap", "best")


@dataclass(frozen=True)
class Timeouts:
    connect_s: float = 5.0
    first_byte_s: float = 60.0
    between_chunks_s: float = 30.0
    total_s: float = 300.0


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

    @property
    def qualified_model(self) -> str:
        return f"{self.provider}/{self.model}"


@dataclass(frozen=True)
class Route:
    name: str
    deployments: tuple[str, ...]
    strategy: str = "balanced"


@dataclass(frozen=True)
class Catalog:
    deployments: Mapping[str, Deployment]
    routes: Mapping[str, Route]
    aliases: Mapping[str, str] = field(default_factory=dict)

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
    )


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
        routes[name] = Route(name, ids, strategy=str(raw.get("strategy", "balanced")))
    aliases = {str(k): str(v) for k, v in config.get("aliases", {}).items()}
    return Catalog(deployments=deployments, routes=routes, aliases=aliases)


def read_config(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def load_catalog(path: Path | None, env: Mapping[str, str]) -> Catalog:
    return build_catalog(read_config(path), env)
