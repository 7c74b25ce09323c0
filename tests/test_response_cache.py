"""The response cache's pure parts (switchyard/response_cache.py) and its request headers
(services/ingress/hints.py): who is cached, under which key, and what a hit answers."""

from __future__ import annotations

import pytest

from services.ingress.hints import Cache, parse_cache
from switchyard import codec
from switchyard.catalog import Route
from switchyard.errors import GatewayError
from switchyard.response_cache import (
    cache_key,
    deterministic,
    hit_response,
    plan,
    replay_frames,
    stored_answer,
    usable,
)
from switchyard.v1 import invoke_pb2

CACHED = Route("cached", ("a",), cache_ttl_s=300.0)
PLAIN = Route("plain", ("a",))
SIDE_EFFECTS = Route("booking", ("a",), cache_ttl_s=300.0, side_effects=True)


def request(text: str = "hi", **fields: object) -> invoke_pb2.InvokeRequest:
    r = invoke_pb2.InvokeRequest(request_id="r1", model="cached", project_id="acme", temperature=0.0)
    r.messages.add(role=invoke_pb2.ROLE_USER).content.add(text=text)
    for name, value in fields.items():
        setattr(r, name, value)
    return r


def test_deterministic_means_temperature_zero_a_seed_or_an_embedding() -> None:
    assert deterministic(request())
    sampled = request(temperature=0.7)
    assert not deterministic(sampled)
    sampled.seed = 7
    assert deterministic(sampled)
    unset = request()
    unset.ClearField("temperature")
    assert not deterministic(unset)  # the providers' default samples
    assert deterministic(invoke_pb2.InvokeRequest(kind=invoke_pb2.InvokeRequest.KIND_EMBEDDING))


def test_the_route_caches_its_deterministic_requests_only() -> None:
    assert plan(CACHED, request()) is not None and plan(CACHED, request()).ttl_s == 300.0  # type: ignore[union-attr]
    assert plan(CACHED, request(temperature=0.7)) is None
    assert plan(PLAIN, request()) is None
    assert plan(None, request()) is None  # a concrete model, no route: only when asked


def test_a_request_can_opt_in_opt_out_and_refresh() -> None:
    asked = request(temperature=0.9)
    asked.cache.ttl_ms = 60_000
    assert plan(PLAIN, asked).ttl_s == 60.0  # type: ignore[union-attr]
    assert plan(None, asked) is not None
    for field in ("off", "no_store"):
        r = request()
        setattr(r.cache, field, True)
        assert plan(CACHED, r) is None
    fresh = request()
    fresh.cache.no_cache = True
    refresh = plan(CACHED, fresh)
    assert refresh is not None and refresh.read is False  # answered fresh, then stored


def test_never_for_side_effects_or_token_counts() -> None:
    assert plan(SIDE_EFFECTS, request()) is None
    counting = request(kind=invoke_pb2.InvokeRequest.KIND_COUNT_TOKENS)
    counting.cache.ttl_ms = 60_000
    assert plan(CACHED, counting) is None


def test_the_key_ignores_delivery_and_identity_but_not_the_question() -> None:
    base = cache_key(request(), "cached")
    varied = request(
        request_id="r2", stream=True, api="anthropic", key_id="k2", agent_id="bot", deadline_unix_ms=5
    )
    varied.metadata["run_id"] = "42"
    varied.cache.no_cache = True
    varied.model = "an-alias-of-cached"
    assert cache_key(varied, "cached") == base
    assert cache_key(request("hello"), "cached") != base
    assert cache_key(request(max_tokens=5), "cached") != base
    assert cache_key(request(), "plain") != base
    assert cache_key(request(project_id="other"), "cached") != base
    # A key names its project's prefix, and is a valid KV key.
    assert base.split(".")[0] != cache_key(request(project_id="other"), "cached").split(".")[0]
    assert all(c.isalnum() or c == "." for c in base)


def test_a_stored_answer_serves_only_its_project_until_it_expires() -> None:
    answer = invoke_pb2.InvokeResponse(cost_usd="0.0012")
    entry = stored_answer(answer, "acme", ttl_ms=1000, now_ms=10_000)
    assert usable(entry, "acme", 10_999)
    assert not usable(entry, "acme", 11_000)
    assert not usable(entry, "other", 10_500)


def test_a_hit_costs_nothing_and_says_where_it_came_from() -> None:
    stored = invoke_pb2.InvokeResponse(
        request_id="first", provider="openai", model="gpt", deployment_id="openai/gpt", cost_usd="0.0012"
    )
    stored.message.content.add(text="hello")
    stored.message.tool_calls.add(id="c1", name="lookup", arguments_json='{"q": 1}')
    stored.usage.prompt_tokens, stored.usage.completion_tokens = 10, 2
    entry = stored_answer(stored, "acme", ttl_ms=60_000, now_ms=1_000)
    ask = request(received_unix_ms=5_000)
    hit = hit_response(entry, ask, "cached", now_ms=5_000.5)
    assert hit.request_id == "r1" and hit.cost_usd == "0" and not hit.attempts
    assert hit.usage.prompt_tokens == 10  # the tokens the answer stands for
    assert hit.rationale.route == "cached" and "response cache" in hit.rationale.reason
    assert hit.latency_ms == pytest.approx(0.5)

    [plain] = replay_frames(hit, stream=False)
    assert codec.decode_reply(plain).final.message.content[0].text == "hello"
    chunk, final = (codec.decode_reply(f) for f in replay_frames(hit, stream=True))
    assert chunk.chunk.delta_text == "hello"
    assert (
        chunk.chunk.tool_calls[0].arguments_delta == '{"q": 1}' and chunk.chunk.tool_calls[0].name == "lookup"
    )
    assert final.final.request_id == "r1"


@pytest.mark.parametrize(
    ("switchyard", "control", "expected"),
    [
        ("", "", None),
        ("", "max-age=0", None),  # a directive the cache does not implement is ignored
        ("", "no-store", Cache(no_store=True)),
        ("", "No-Cache, max-age=0", Cache(no_cache=True)),
        ("off", "", Cache(off=True)),
        ("refresh", "", Cache(no_cache=True)),
        ("600", "", Cache(ttl_s=600.0)),
        ("ttl=90s", "", Cache(ttl_s=90.0)),
    ],
)
def test_cache_headers(switchyard: str, control: str, expected: Cache | None) -> None:
    assert parse_cache(switchyard, control) == expected


@pytest.mark.parametrize("bad", ["forever", "0", "-5", "nan", str(8 * 86400)])
def test_a_bad_cache_header_is_refused(bad: str) -> None:
    with pytest.raises(GatewayError, match="x-switchyard-cache"):
        parse_cache(bad, "")
