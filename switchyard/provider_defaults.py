"""What Switchyard knows about the real providers before any config: their API key and base-URL
environment variables, default endpoints, a price table of current models, and which models to
enable when only a key is present.

Pure: `configured_deployment` and `discovered_deployments` take the parsed config and an
environment mapping and return plain data; `switchyard.catalog.build_catalog` calls them.

Precedence, most specific first:
  price:    deployment `price` > `[providers.<p>.prices."<model>"]` > the table below
  base URL: deployment `base_url` > `[providers.<p>] base_url` > `<P>_BASE_URL` > the default
  key:      deployment `api_key` / `api_key_env` > `[providers.<p>] api_key(_env)` > `<P>_API_KEY`

Prices are USD per 1M tokens (input, output, cached input) as listed on the providers' public
pricing pages when this table was written (see docs/providers.md for the date and caveats).
They change: override them in config rather than trusting this table for invoices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from switchyard.config import ProviderConfig, ProviderPriceConfig, validated
from switchyard.pricing import Price

PRICES_AS_OF = "2026-05"


@dataclass(frozen=True)
class ProviderDefaults:
    """One real provider: how to reach it and what its models cost."""

    name: str
    adapter: str
    key_env: str
    base_url_env: str
    base_url: str
    default_models: tuple[str, ...]
    prices: Mapping[str, Price] = field(default_factory=dict)
    quality: Mapping[str, float] = field(default_factory=dict)


def _p(input: str, output: str, cached: str | None = None) -> Price:
    return Price.of(input, output, cached)


OPENAI_PRICES = {
    "gpt-5.5": _p("5.00", "30.00", "0.50"),
    "gpt-5.4": _p("2.50", "15.00", "0.25"),
    "gpt-5.4-mini": _p("0.75", "4.50", "0.075"),
    "gpt-5": _p("1.25", "10.00", "0.125"),
    "gpt-5-mini": _p("0.25", "2.00", "0.025"),
    "gpt-5-nano": _p("0.05", "0.40", "0.005"),
    "gpt-4.1": _p("2.00", "8.00", "0.50"),
    "gpt-4.1-mini": _p("0.40", "1.60", "0.10"),
    "gpt-4.1-nano": _p("0.10", "0.40", "0.025"),
    "gpt-4o": _p("2.50", "10.00", "1.25"),
    "gpt-4o-mini": _p("0.15", "0.60", "0.075"),
    "o3": _p("2.00", "8.00", "0.50"),
    "o4-mini": _p("1.10", "4.40", "0.275"),
}


def _anthropic(input: str, output: str) -> Price:
    """Anthropic's published multipliers: cache reads 0.1x input, cache writes 1.25x (5-minute
    TTL) and 2x (1-hour TTL)."""
    base = Decimal(input)
    return Price.of(input, output, base * Decimal("0.1"), base * Decimal("1.25"), base * 2)


ANTHROPIC_PRICES = {
    "claude-opus-4-7": _anthropic("5.00", "25.00"),
    "claude-opus-4-5": _anthropic("5.00", "25.00"),
    "claude-opus-4-1": _anthropic("15.00", "75.00"),
    "claude-opus-4": _anthropic("15.00", "75.00"),
    "claude-sonnet-4-6": _anthropic("3.00", "15.00"),
    "claude-sonnet-4-5": _anthropic("3.00", "15.00"),
    "claude-sonnet-4": _anthropic("3.00", "15.00"),
    "claude-3-7-sonnet": _anthropic("3.00", "15.00"),
    "claude-haiku-4-5": _anthropic("1.00", "5.00"),
    "claude-3-5-haiku": _anthropic("0.80", "4.00"),
}

# Prompts up to 200k tokens; Gemini 2.5/3.x Pro charge more above that (not modelled).
GEMINI_PRICES = {
    "gemini-3.1-pro": _p("2.00", "12.00", "0.20"),
    "gemini-3.1-flash-lite": _p("0.25", "1.50", "0.025"),
    "gemini-3-pro": _p("2.00", "12.00", "0.20"),
    "gemini-3-flash": _p("0.50", "3.00", "0.05"),
    "gemini-2.5-pro": _p("1.25", "10.00", "0.125"),
    "gemini-2.5-flash": _p("0.30", "2.50", "0.03"),
    "gemini-2.5-flash-lite": _p("0.10", "0.40", "0.01"),
    "gemini-2.0-flash": _p("0.10", "0.40", "0.025"),
    "gemini-2.0-flash-lite": _p("0.075", "0.30"),
}

# Embedding models (input only): used by `kind = "embedding"` deployments.
OPENAI_PRICES.update(
    {
        "text-embedding-3-small": _p("0.02", "0"),
        "text-embedding-3-large": _p("0.13", "0"),
        "text-embedding-ada-002": _p("0.10", "0"),
    }
)
GEMINI_PRICES["gemini-embedding-001"] = _p("0.15", "0")

MISTRAL_PRICES = {
    "mistral-embed": _p("0.10", "0"),
    "mistral-large-latest": _p("2.00", "6.00"),
    "mistral-medium-latest": _p("0.40", "2.00"),
    "mistral-small-latest": _p("0.10", "0.30"),
    "magistral-medium-latest": _p("2.00", "5.00"),
    "magistral-small-latest": _p("0.50", "1.50"),
    "codestral-latest": _p("0.30", "0.90"),
    "devstral-medium-latest": _p("0.40", "2.00"),
    "devstral-small-latest": _p("0.10", "0.30"),
    "pixtral-large-latest": _p("2.00", "6.00"),
    "ministral-8b-latest": _p("0.10", "0.10"),
    "ministral-3b-latest": _p("0.04", "0.04"),
    "open-mistral-nemo": _p("0.15", "0.15"),
}

PROVIDERS: dict[str, ProviderDefaults] = {
    "openai": ProviderDefaults(
        name="openai",
        adapter="openai",
        key_env="OPENAI_API_KEY",
        base_url_env="OPENAI_BASE_URL",
        base_url="https://api.openai.com/v1",
        default_models=("gpt-4.1-mini", "gpt-4.1"),
        prices=OPENAI_PRICES,
        quality={"gpt-4.1-mini": 0.7, "gpt-4.1": 0.85},
    ),
    "anthropic": ProviderDefaults(
        name="anthropic",
        adapter="anthropic",
        key_env="ANTHROPIC_API_KEY",
        base_url_env="ANTHROPIC_BASE_URL",
        base_url="https://api.anthropic.com",
        default_models=("claude-haiku-4-5", "claude-sonnet-4-5"),
        prices=ANTHROPIC_PRICES,
        quality={"claude-haiku-4-5": 0.72, "claude-sonnet-4-5": 0.9},
    ),
    "gemini": ProviderDefaults(
        name="gemini",
        adapter="gemini",
        key_env="GEMINI_API_KEY",
        base_url_env="GEMINI_BASE_URL",
        base_url="https://generativelanguage.googleapis.com",
        default_models=("gemini-2.5-flash", "gemini-2.5-pro"),
        prices=GEMINI_PRICES,
        quality={"gemini-2.5-flash": 0.72, "gemini-2.5-pro": 0.88},
    ),
    "mistral": ProviderDefaults(
        name="mistral",
        adapter="mistral",
        key_env="MISTRAL_API_KEY",
        base_url_env="MISTRAL_BASE_URL",
        base_url="https://api.mistral.ai",
        default_models=("mistral-small-latest", "mistral-large-latest"),
        prices=MISTRAL_PRICES,
        quality={"mistral-small-latest": 0.62, "mistral-large-latest": 0.8},
    ),
}


def defaults_for(provider: str, adapter: str | None = None) -> ProviderDefaults | None:
    """The known provider a deployment belongs to: by provider name, else by wire format
    (a deployment `openai-eu` with adapter `openai` prices like OpenAI)."""
    if provider in PROVIDERS:
        return PROVIDERS[provider]
    for known in PROVIDERS.values():
        if adapter and known.adapter == adapter:
            return known
    return None


def lookup_price(prices: Mapping[str, Price], model: str) -> Price | None:
    """Exact model name, else the longest table entry the name starts with, so dated snapshots
    (`gpt-4o-mini-2024-07-18`, `claude-sonnet-4-5-20250929`) price like their family."""
    if model in prices:
        return prices[model]
    best = ""
    for name in prices:
        if model.startswith(name) and len(name) > len(best):
            best = name
    return prices[best] if best else None


def _price_from_config(config: ProviderPriceConfig) -> Price:
    return Price.of(
        config.input, config.output, config.cached_input, config.cache_write, config.cache_write_1h
    )


def price_for(provider: str, adapter: str, model: str, config: Mapping[str, Any]) -> Price | None:
    """Config override (`[providers.<provider>.prices."<model>"]`) first, then the table."""
    section = _provider_section(config, provider)
    overrides = {name: _price_from_config(price) for name, price in section.prices.items()}
    found = lookup_price(overrides, model)
    if found is not None:
        return found
    known = defaults_for(provider, adapter)
    if known is not None:
        section = _provider_section(config, known.name)
        overrides = {name: _price_from_config(price) for name, price in section.prices.items()}
        return lookup_price(overrides, model) or lookup_price(known.prices, model)
    return None


def _provider_section(config: Mapping[str, Any], provider: str) -> ProviderConfig:
    """`[providers.<provider>]`, checked (ConfigError names a bad key); empty when absent."""
    raw = config.get("providers", {}).get(provider) or {}
    return validated(ProviderConfig, raw, f"providers.{provider}")


def base_url_for(known: ProviderDefaults, config: Mapping[str, Any], env: Mapping[str, str]) -> str:
    section = _provider_section(config, known.name)
    return section.base_url or env.get(known.base_url_env) or known.base_url


def _key_fields(known: ProviderDefaults, section: ProviderConfig) -> dict[str, str]:
    if section.api_key:
        return {"api_key": section.api_key}
    return {"api_key_env": section.api_key_env or known.key_env}


def configured_deployment(
    raw: Mapping[str, Any], config: Mapping[str, Any], env: Mapping[str, str]
) -> dict[str, Any]:
    """A `[[deployments]]` entry completed with what the provider defaults know: the price of
    its model, the provider's base URL, and its standard key variable. Explicit fields win."""
    out = dict(raw)
    provider = str(raw.get("provider", ""))
    adapter = str(raw.get("adapter", provider))
    known = defaults_for(provider, adapter)
    if "price" not in out and "model" in out:
        price = price_for(provider, adapter, str(out["model"]), config)
        if price is not None:
            out["price"] = _price_table_entry(price)
    if known is None:
        return out
    if not out.get("base_url"):
        out["base_url"] = base_url_for(known, config, env)
    if not out.get("api_key") and not out.get("api_key_env"):
        out.update(_key_fields(known, _provider_section(config, known.name)))
    return out


def _price_table_entry(price: Price) -> dict[str, str]:
    entry = {"input": str(price.input), "output": str(price.output)}
    for name in ("cached_input", "cache_write", "cache_write_1h"):
        value = getattr(price, name)
        if value is not None:
            entry[name] = str(value)
    return entry


def discovered_deployments(config: Mapping[str, Any], env: Mapping[str, str]) -> list[dict[str, Any]]:
    """`[[deployments]]`-shaped entries for every known provider whose key is present (in the
    environment or in `[providers.<p>]`), unless `[providers.<p>] enabled = false`.

    Models: `[providers.<p>] models = [...]`, else the provider's defaults. Ids are
    `<provider>/<model>`; a configured deployment with the same id wins (the caller keeps it).
    """
    found: list[dict[str, Any]] = []
    for known in PROVIDERS.values():
        section = _provider_section(config, known.name)
        if not section.enabled:
            continue
        keys = _key_fields(known, section)
        key = keys.get("api_key") or env.get(keys.get("api_key_env", ""), "")
        if not key:
            continue
        models = section.models or known.default_models
        for model in models:
            entry: dict[str, Any] = {
                "id": f"{known.name}/{model}",
                "provider": known.name,
                "model": str(model),
                "adapter": known.adapter,
                "base_url": base_url_for(known, config, env),
                "quality": section.quality.get(model, known.quality.get(model, 0.6)),
                **keys,
            }
            if section.timeouts is not None:
                entry["timeouts"] = section.timeouts.model_dump(exclude_none=True)
            if section.options is not None:
                entry["options"] = dict(section.options)
            price = price_for(known.name, known.adapter, str(model), config)
            if price is not None:
                entry["price"] = _price_table_entry(price)
            found.append(entry)
    return found
