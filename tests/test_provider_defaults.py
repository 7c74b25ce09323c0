"""Provider discovery from the environment, the price table and its config overrides, and how
they enter the catalog."""

from __future__ import annotations

from decimal import Decimal

import pytest

from switchyard.catalog import build_catalog
from switchyard.pricing import Price
from switchyard.provider_defaults import (
    ANTHROPIC_PRICES,
    OPENAI_PRICES,
    PROVIDERS,
    configured_deployment,
    discovered_deployments,
    lookup_price,
    price_for,
)


def test_every_known_provider_prices_its_default_models() -> None:
    for known in PROVIDERS.values():
        for model in known.default_models:
            price = lookup_price(known.prices, model)
            assert price is not None and price.input > 0 and price.output > price.input, (known.name, model)


def test_dated_snapshots_price_like_their_family() -> None:
    assert lookup_price(OPENAI_PRICES, "gpt-4o-mini-2024-07-18") == OPENAI_PRICES["gpt-4o-mini"]
    assert lookup_price(OPENAI_PRICES, "gpt-4o-2024-08-06") == OPENAI_PRICES["gpt-4o"]
    assert (
        lookup_price(ANTHROPIC_PRICES, "claude-sonnet-4-5-20250929") == ANTHROPIC_PRICES["claude-sonnet-4-5"]
    )
    assert lookup_price(OPENAI_PRICES, "unknown-model") is None


def test_a_key_in_the_environment_enables_its_provider() -> None:
    found = discovered_deployments(
        {}, {"ANTHROPIC_API_KEY": "sk-ant-x", "MISTRAL_BASE_URL": "http://proxy:1"}
    )
    assert {d["provider"] for d in found} == {"anthropic"}  # a base URL alone enables nothing
    ids = [d["id"] for d in found]
    assert ids == [f"anthropic/{m}" for m in PROVIDERS["anthropic"].default_models]
    first = found[0]
    assert first["base_url"] == "https://api.anthropic.com" and first["api_key_env"] == "ANTHROPIC_API_KEY"
    assert "api_key" not in first  # the key stays in the environment, read by name


def test_config_sections_choose_models_base_urls_timeouts_and_can_disable() -> None:
    config = {
        "providers": {
            "openai": {
                "models": ["gpt-4o"],
                "base_url": "https://proxy.corp/v1",
                "timeouts": {"connect_s": 2},
                "prices": {"gpt-4o": {"input": "2.00", "output": "8.00"}},
            },
            "gemini": {"enabled": False},
            "mistral": {"api_key": "mistral-inline-key"},
        }
    }
    env = {"OPENAI_API_KEY": "sk-o", "OPENAI_BASE_URL": "http://ignored", "GEMINI_API_KEY": "g"}
    found = {d["id"]: d for d in discovered_deployments(config, env)}
    assert set(found) == {"openai/gpt-4o", *(f"mistral/{m}" for m in PROVIDERS["mistral"].default_models)}
    openai = found["openai/gpt-4o"]
    assert openai["base_url"] == "https://proxy.corp/v1"  # config beats the variable
    assert openai["timeouts"] == {"connect_s": 2}
    assert openai["price"] == {"input": "2.00", "output": "8.00"}
    assert found["mistral/mistral-small-latest"]["api_key"] == "mistral-inline-key"
    # Without a config base URL the variable wins over the default.
    assert (
        discovered_deployments({}, {"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": "http://local:8/v1"})[0][
            "base_url"
        ]
        == "http://local:8/v1"
    )


def test_configured_deployments_are_completed_but_explicit_fields_win() -> None:
    config = {
        "providers": {"openai": {"prices": {"gpt-4.1": {"input": 1, "output": 4, "cached_input": "0.25"}}}}
    }
    env = {"OPENAI_BASE_URL": "http://gw/v1"}
    filled = configured_deployment(
        {"provider": "openai-eu", "adapter": "openai", "model": "gpt-4.1"}, config, env
    )
    assert filled["price"] == {"input": "1", "output": "4", "cached_input": "0.25"}
    assert filled["base_url"] == "http://gw/v1" and filled["api_key_env"] == "OPENAI_API_KEY"
    explicit = configured_deployment(
        {"provider": "openai", "model": "gpt-4o", "price": {"input": 9, "output": 9}, "api_key_env": "MY_KEY",
         "base_url": "http://mine/v1"},
        config,
        env,
    )  # fmt: skip
    assert explicit["price"] == {"input": 9, "output": 9} and explicit["api_key_env"] == "MY_KEY"
    assert explicit["base_url"] == "http://mine/v1"
    unknown = {"provider": "acme", "model": "x", "adapter": "openai_compat"}
    assert configured_deployment(unknown, config, env) == unknown
    assert price_for("acme", "openai_compat", "x", config) is None


def test_catalog_with_env_keys_several_deployments_of_one_provider_and_priced_configs() -> None:
    config = {
        "deployments": [
            {"id": "openai-eu/gpt-4.1-mini", "provider": "openai", "model": "gpt-4.1-mini",
             "base_url": "https://eu.proxy/v1", "api_key_env": "OPENAI_EU_KEY"},
            {"provider": "anthropic", "model": "claude-haiku-4-5"},  # priced from the table
        ]
    }  # fmt: skip
    env = {"OPENAI_API_KEY": "sk-us-key-123456", "OPENAI_EU_KEY": "sk-eu-key-654321"}
    catalog = build_catalog(config, env)
    us, eu = catalog.deployments["openai/gpt-4.1-mini"], catalog.deployments["openai-eu/gpt-4.1-mini"]
    assert (us.api_key, us.base_url) == ("sk-us-key-123456", "https://api.openai.com/v1")
    assert (eu.api_key, eu.base_url) == ("sk-eu-key-654321", "https://eu.proxy/v1")
    assert us.price == eu.price == Price.of("0.40", "1.60", "0.10")
    assert "sk-us-key" not in repr(us)
    # Both serve the same model under their own ids, and both ride in the built-in routes.
    assert us.qualified_model == eu.qualified_model == "openai/gpt-4.1-mini"
    assert {us.id, eu.id} <= set(catalog.routes["auto"].deployments)
    # The Anthropic deployment's key variable is unset: it stays off, as the issue asks.
    assert not any(d.provider == "anthropic" for d in catalog.deployments.values())
    with_key = build_catalog(config, {**env, "ANTHROPIC_API_KEY": "sk-ant-123456"})
    haiku = with_key.deployments["anthropic/claude-haiku-4-5"]
    assert haiku.price.input == Decimal("1.00") and haiku.price.cached_input == Decimal("0.10")


def test_a_price_without_output_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="output"):
        discovered_deployments(
            {"providers": {"openai": {"prices": {"gpt-4.1-mini": {"input": 1}}}}}, {"OPENAI_API_KEY": "k"}
        )
