"""Routes, aliases and rules in the TOML config, and rule matching on request features. Pure."""

from __future__ import annotations

import tomllib

import pytest

from services.router.rules import features_of, first_match
from switchyard.catalog import build_catalog
from switchyard.v1 import invoke_pb2

CONFIG = tomllib.loads(
    r"""
[[deployments]]
id = "cheapo"
provider = "demo"
model = "cheapo"
adapter = "demo"
quality = 0.3

[[deployments]]
id = "keyed"
provider = "openai"
model = "gpt-x"
api_key_env = "NO_SUCH_KEY_VAR"

[routes.classify]
deployments = ["cheapo", "demo/fast"]
strategy = "cheapest"

[routes.custom]
deployments = ["demo/fast", "demo/smart"]
weights = { latency = 1, quality = 3 }

[routes.needs-key]
deployments = ["keyed"]

[aliases]
smartest = "best"
mini = "demo/fast"

[[rules]]
name = "classification"
route = "classify"
match = { metadata = { task = ["classification", "tagging"] } }

[[rules]]
name = "hard-questions"
route = "best"
match = { last_user_regex = '(?i)\b(prove|derive)\b', max_prompt_tokens = 2000 }

[[rules]]
name = "vision"
route = "smartest"
match = { images = true }

[[rules]]
name = "long-prompts"
route = "fast"
applies_to = ["auto", "custom"]
match = { min_prompt_tokens = 500 }

[[rules]]
name = "tools-anywhere"
route = "demo/smart"
applies_to = "*"
match = { tools = true }

[[rules]]
name = "off-with-its-route"
route = "needs-key"
"""
)


def request(text: str = "hello", model: str = "auto", **metadata: str) -> invoke_pb2.InvokeRequest:
    req = invoke_pb2.InvokeRequest(model=model)
    req.messages.add(role=invoke_pb2.ROLE_SYSTEM).content.add(text="you are terse")
    req.messages.add(role=invoke_pb2.ROLE_USER).content.add(text=text)
    req.metadata.update(metadata)
    return req


@pytest.fixture(scope="module")
def catalog():
    return build_catalog(CONFIG, env={})


def fired(catalog, req: invoke_pb2.InvokeRequest) -> str | None:
    requested, _ = catalog.resolve(req.model)
    rule = first_match(catalog.rules, requested, features_of(req))
    return rule.name if rule else None


def test_routes_carry_their_strategy_or_weights_and_aliases_resolve(catalog) -> None:
    assert catalog.routes["classify"].strategy == "cheapest"
    assert catalog.routes["custom"].weights == {"latency": 1.0, "quality": 3.0}
    assert catalog.routes["fast"].strategy == "fastest"  # built in
    assert catalog.route("smartest") is catalog.routes["best"]
    assert catalog.route("demo/fast") is None  # a concrete model, not a route
    assert catalog.resolve("mini") == ("demo/fast", [catalog.deployments["demo/fast"]])
    assert "needs-key" not in catalog.routes  # its only deployment has no key


def test_rules_are_loaded_in_order_and_one_whose_route_is_off_is_dropped(catalog) -> None:
    assert [r.name for r in catalog.rules] == [
        "classification",
        "hard-questions",
        "vision",
        "long-prompts",
        "tools-anywhere",
    ]


def test_metadata_rule(catalog) -> None:
    assert fired(catalog, request(task="classification")) == "classification"
    assert fired(catalog, request(task="tagging")) == "classification"
    assert fired(catalog, request(task="summarize")) is None
    # Rules redirect only the routes they apply to: a named model is left alone.
    assert fired(catalog, request(model="demo/fast", task="classification")) is None


def test_regex_on_the_last_user_message_and_a_token_cap(catalog) -> None:
    assert fired(catalog, request("Please PROVE that 2+2=4")) == "hard-questions"
    assert fired(catalog, request("improve this")) is None  # word boundary
    long_text = "prove " + "x" * 9000
    assert fired(catalog, request(long_text)) == "long-prompts"  # over the cap of hard-questions


def test_prompt_token_rule_and_applies_to(catalog) -> None:
    long_text = "word " * 500
    assert fired(catalog, request(long_text)) == "long-prompts"
    assert fired(catalog, request(long_text, model="custom")) == "long-prompts"
    assert fired(catalog, request(long_text, model="cheap")) is None


def test_images_and_tools_rules(catalog) -> None:
    with_image = request("what is this")
    with_image.messages[-1].content.add(image=invoke_pb2.ImagePart(url="https://x/y.png"))
    # An image is ~765 tokens, so it would match long-prompts too: the first rule in order wins.
    assert fired(catalog, with_image) == "vision"
    with_tools = request("call it", model="cheap")
    with_tools.tools.add(name="lookup", parameters_json="{}")
    assert fired(catalog, with_tools) == "tools-anywhere"


def test_the_last_user_message_counts_not_an_earlier_one(catalog) -> None:
    req = request("prove it")
    req.messages.add(role=invoke_pb2.ROLE_ASSISTANT).content.add(text="ok")
    req.messages.add(role=invoke_pb2.ROLE_USER).content.add(text="thanks")
    assert fired(catalog, req) is None


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ('[[rules]]\nname = "x"\nroute = "nowhere"', "unknown 'nowhere'"),
        ('[[rules]]\nroute = "auto"', "needs a name"),
        ('[[rules]]\nname = "x"\nroute = "auto"\nmatch = { metadta = { a = "b" } }', "unknown match key"),
        ('[[rules]]\nname = "x"\nroute = "auto"\nmatch = { last_user_regex = "(" }', "bad last_user_regex"),
        ('[routes.r]\ndeployments = ["demo/fast"]\nstrategy = "quickest"', "strategy 'quickest'"),
        ('[routes.r]\ndeployments = ["demo/fast"]\nweights = { speed = 1 }', "weights must be a table"),
        ('[routes.r]\ndeployments = ["demo/fast"]\nweights = { cost = 0 }', "not all zero"),
    ],
)
def test_bad_config_is_refused_with_a_clear_message(toml: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle.replace("(", r"\(")):
        build_catalog(tomllib.loads(toml), env={})
