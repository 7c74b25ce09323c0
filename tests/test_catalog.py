import pytest

from switchyard.catalog import BUILTIN_ROUTES, build_catalog
from switchyard.errors import GatewayError

CONFIG = {
    "deployments": [
        {
            "id": "acme-eu/gpt-x",
            "provider": "acme",
            "model": "gpt-x",
            "adapter": "openai_compat",
            "base_url": "http://127.0.0.1:9/v1",
            "api_key_env": "ACME_KEY",
            "price": {"input": 1, "output": 2},
            "quality": 0.8,
            "timeouts": {"connect_s": 1, "total_s": 30},
        },
        {"id": "nokey/m", "provider": "nokey", "model": "m", "api_key_env": "MISSING_KEY"},
    ],
    "routes": {
        "mine": {"deployments": ["acme-eu/gpt-x", "demo/fast"], "strategy": "fastest"},
        "dead": {"deployments": ["nokey/m"]},
    },
    "aliases": {"gpt": "acme/gpt-x", "quick": "mine"},
}


def test_builtin_routes_and_demo_exist_with_no_config() -> None:
    catalog = build_catalog({}, {})
    assert set(BUILTIN_ROUTES) <= set(catalog.routes)
    route, candidates = catalog.resolve("auto")
    assert route == "auto" and {d.provider for d in candidates} == {"demo"}


def test_config_deployments_keys_from_env_routes_and_aliases() -> None:
    catalog = build_catalog(CONFIG, {"ACME_KEY": "sk-secret-value"})
    dep = catalog.deployments["acme-eu/gpt-x"]
    assert dep.api_key == "sk-secret-value"
    assert "sk-secret" not in repr(dep)  # keys never appear in reprs (logs)
    assert dep.timeouts.connect_s == 1 and dep.timeouts.total_s == 30
    assert catalog.resolve("gpt") == ("acme/gpt-x", [dep])
    assert catalog.resolve("quick")[0] == "mine"
    assert [d.id for d in catalog.resolve("mine")[1]] == ["acme-eu/gpt-x", "demo/fast"]
    assert catalog.routes["mine"].strategy == "fastest"
    # a deployment whose key variable is unset stays off, and so does a route of only such
    assert "nokey/m" not in catalog.deployments
    assert "dead" not in catalog.routes


def test_unknown_model_names_the_choices() -> None:
    catalog = build_catalog({}, {})
    with pytest.raises(GatewayError) as info:
        catalog.resolve("gpt-99")
    assert info.value.code == "model_not_found"
    assert info.value.http_status == 404
    assert "auto" in info.value.message


def test_demo_can_be_disabled() -> None:
    catalog = build_catalog({"demo": {"enabled": False}, **CONFIG}, {"ACME_KEY": "k" * 10})
    assert catalog.providers() == ["acme"]
