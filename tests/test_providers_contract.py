"""Contract tests of the real adapters through the whole stack: HTTP ingress -> NATS -> router ->
provider worker (real process) -> fake upstream speaking the provider's wire format -> back,
with the completion in the chDB ledger.

Deployments reach the fakes three ways, as users configure them: OpenAI and Gemini are found
from their *_API_KEY / *_BASE_URL variables (env discovery), Anthropic and Mistral are
`[[deployments]]` priced from the built-in table or a config override, and `local/llama` is an
OpenAI-compatible server with an explicit price.
"""

from __future__ import annotations

import asyncio
import base64
import tempfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import anthropic
import httpx
import orjson
import pytest

from switchyard.natsserver import free_port
from switchyard.pricing import Price, cost_usd
from switchyard.testing.stack import Stack, ledger_sql, running, wait_for_rows, wait_until
from switchyard.tokens import pessimistic_text_tokens
from switchyard.vectors import unpack_base64
from tests.fakes import AnthropicFake, Behavior, FakeUpstream, GeminiFake, MistralFake, OpenAIFake
from tests.fakes.base import fake_vector, text_tokens

KEYS = {
    "openai": "sk-test-openai-0123456789",
    "backup": "sk-test-backup-9876543210",
    "anthropic": "sk-ant-test-0123456789",
    "gemini": "AIzaTestGeminiKey0123456789",
    "mistral": "mistral-test-key-0123456789",
    "local": "local-test-key-0123456789",
}
MODELS = {
    "openai": "openai/gpt-4o-mini",
    "anthropic": "anthropic/claude-haiku-4-5",
    "gemini": "gemini/gemini-2.5-flash",
    "mistral": "mistral/mistral-small-latest",
    "local": "local/llama",
}
# What each deployment must cost: the built-in table (openai, anthropic, gemini), a config
# override of the table (mistral: the table says 0.10/0.30), an explicit price (local).
PRICES = {
    "openai": Price.of("0.15", "0.60", "0.075"),
    "anthropic": Price.of("1.00", "5.00", "0.10"),
    "gemini": Price.of("0.30", "2.50", "0.03"),
    "mistral": Price.of("0.20", "0.60"),
    "local": Price.of("0.50", "1.50"),
}
PROVIDERS = list(MODELS)
# Generous timeouts for the ordinary deployments (a loaded machine must not trip them); the
# `*-tight` deployments reach the same fakes with short ones, for the timeout tests only.
TIMEOUTS = "{ connect_s = 5, first_byte_s = 10, between_chunks_s = 10, total_s = 30 }"
TIGHT = "{ connect_s = 2, first_byte_s = 1, between_chunks_s = 0.5, total_s = 2 }"
HELLO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake-image-bytes").decode()


def config_toml(fakes: dict[str, FakeUpstream], dead_port: int) -> str:
    return f"""
[demo]
enabled = false

# These tests drive every error class at the same deployments in a row; they check error
# mapping, not health, so the breaker must not take a deployment out between them.
[router]
breaker_failures = 1000000

[providers.openai]
models = ["gpt-4o-mini"]
timeouts = {TIMEOUTS}

[providers.gemini]
models = ["gemini-2.5-flash"]
timeouts = {TIMEOUTS}

[providers.mistral.prices."mistral-small-latest"]
input = "0.20"
output = "0.60"

[[deployments]]
id = "openai-backup/gpt-4o-mini"
provider = "openai"
model = "gpt-4o-mini"
base_url = "{fakes["backup"].base_url}"
api_key_env = "BACKUP_OPENAI_KEY"
timeouts = {TIMEOUTS}

[[deployments]]
provider = "anthropic"
model = "claude-haiku-4-5"
base_url = "{fakes["anthropic"].base_url}"
timeouts = {TIMEOUTS}

[[deployments]]
provider = "mistral"
model = "mistral-small-latest"
base_url = "{fakes["mistral"].base_url}"
timeouts = {TIMEOUTS}

[[deployments]]
provider = "local"
model = "llama"
adapter = "openai_compat"
base_url = "{fakes["local"].base_url}"
api_key_env = "LOCAL_LLM_KEY"
price = {{ input = "0.50", output = "1.50" }}
timeouts = {TIMEOUTS}

[[deployments]]
id = "openai-tight/gpt-4o-mini"
provider = "openai"
model = "gpt-4o-mini"
base_url = "{fakes["openai"].base_url}"
timeouts = {TIGHT}

[[deployments]]
id = "anthropic-tight/claude-haiku-4-5"
provider = "anthropic"
model = "claude-haiku-4-5"
base_url = "{fakes["anthropic"].base_url}"
timeouts = {TIGHT}

[[deployments]]
provider = "dead"
model = "gpt"
adapter = "openai_compat"
base_url = "http://127.0.0.1:{dead_port}/v1"
timeouts = {{ connect_s = 1, first_byte_s = 1, between_chunks_s = 1, total_s = 2 }}

# Rate-limit cases get deployments of their own: the router rightly keeps a deployment aside
# for its Retry-After (up to 17 s here), which would refuse the next error case outright.
[[deployments]]
id = "openai-rl/gpt-4o-mini"
provider = "openai"
model = "gpt-4o-mini"
base_url = "{fakes["openai"].base_url}"
timeouts = {TIMEOUTS}

[[deployments]]
id = "gemini-rl/gemini-2.5-flash"
provider = "gemini"
model = "gemini-2.5-flash"
base_url = "{fakes["gemini"].base_url}"
timeouts = {TIMEOUTS}

# So are the cases of a provider refusing the gateway's key: that opens the deployment's
# breaker at once, whatever `breaker_failures` says (a revoked key does not heal by itself).
[[deployments]]
id = "anthropic-auth/claude-haiku-4-5"
provider = "anthropic"
model = "claude-haiku-4-5"
base_url = "{fakes["anthropic"].base_url}"
timeouts = {TIMEOUTS}

[[deployments]]
id = "gemini-auth/gemini-2.5-flash"
provider = "gemini"
model = "gemini-2.5-flash"
base_url = "{fakes["gemini"].base_url}"
timeouts = {TIMEOUTS}

[[deployments]]
id = "mistral-auth/mistral-small-latest"
provider = "mistral"
model = "mistral-small-latest"
base_url = "{fakes["mistral"].base_url}"
timeouts = {TIMEOUTS}

# Only the failover test uses this primary (no error history from other tests), and its
# higher quality makes it the first choice under a quality-only strategy.
[[deployments]]
id = "openai-primary/gpt-4o-mini"
provider = "openai"
model = "gpt-4o-mini"
base_url = "{fakes["openai"].base_url}"
quality = 0.9
timeouts = {TIMEOUTS}

[routes.failover]
deployments = ["openai-primary/gpt-4o-mini", "openai-backup/gpt-4o-mini"]

# Embedding deployments (kind = "embedding"), priced from the built-in table but local/embed.
[[deployments]]
provider = "openai"
model = "text-embedding-3-small"
kind = "embedding"
base_url = "{fakes["openai"].base_url}"
timeouts = {TIMEOUTS}

[[deployments]]
provider = "gemini"
model = "gemini-embedding-001"
kind = "embedding"
base_url = "{fakes["gemini"].base_url}"
timeouts = {TIMEOUTS}

[[deployments]]
provider = "mistral"
model = "mistral-embed"
kind = "embedding"
base_url = "{fakes["mistral"].base_url}"
timeouts = {TIMEOUTS}

[[deployments]]
provider = "local"
model = "embed"
adapter = "openai_compat"
kind = "embedding"
base_url = "{fakes["local"].base_url}"
api_key_env = "LOCAL_LLM_KEY"
price = {{ input = "0.05", output = "0" }}
timeouts = {TIMEOUTS}
"""


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeUpstream]]:
    started: dict[str, FakeUpstream] = {
        "openai": OpenAIFake(api_key=KEYS["openai"]).start(),
        "backup": OpenAIFake(api_key=KEYS["backup"]).start(),
        "anthropic": AnthropicFake(api_key=KEYS["anthropic"]).start(),
        "gemini": GeminiFake(api_key=KEYS["gemini"]).start(),
        "mistral": MistralFake(api_key=KEYS["mistral"]).start(),
        "local": OpenAIFake(api_key=KEYS["local"]).start(),
    }
    try:
        yield started
    finally:
        for fake in started.values():
            fake.stop()


@pytest.fixture(autouse=True)
def _fresh_behaviour(fakes: dict[str, FakeUpstream]) -> None:
    for fake in fakes.values():
        fake.reset()


@pytest.fixture(scope="module")
def stack(fakes: dict[str, FakeUpstream]) -> Iterator[Stack]:
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-providers-"))
    config = workdir / "switchyard.toml"
    config.write_text(config_toml(fakes, free_port()))
    gateway = Stack.create(
        workdir,
        SWITCHYARD_CONFIG_FILE=str(config),
        OPENAI_API_KEY=KEYS["openai"],
        OPENAI_BASE_URL=fakes["openai"].base_url,
        GEMINI_API_KEY=KEYS["gemini"],
        GEMINI_BASE_URL=fakes["gemini"].base_url,
        ANTHROPIC_API_KEY=KEYS["anthropic"],
        MISTRAL_API_KEY=KEYS["mistral"],
        BACKUP_OPENAI_KEY=KEYS["backup"],
        LOCAL_LLM_KEY=KEYS["local"],
    )
    with running(gateway):
        gateway.start(
            ("ledger", "services.ledger"),
            ("budget", "services.budget"),
            ("worker", "services.providers"),  # every configured provider
            ("router", "services.router"),
            ("ingress", "services.ingress"),
        )
        gateway.provision()
        yield gateway


def sse_events(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], orjson.loads(fields["data"])))
    return events


async def invoke(stack: Stack, **body) -> httpx.Response:
    body.setdefault("messages", HELLO)
    async with httpx.AsyncClient(base_url=stack.ingress_url, headers=stack.headers, timeout=30) as http:
        return await http.post("/llm.invoke", json=body)


async def ledger_row(stack: Stack, request_id: str) -> dict:
    rows = await wait_for_rows(
        stack.nats.url, "SELECT * FROM requests FINAL WHERE request_id = {id:String}", 1, {"id": request_id}
    )
    return rows[0]


def expected_usage(provider: str, prompt: int, completion: int, cached: int) -> dict[str, int]:
    # The Mistral API reports no cached tokens.
    cached = 0 if provider == "mistral" else cached
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cached_tokens": cached,
        "cache_write_tokens": 0,
        "cache_write_1h_tokens": 0,
        "reasoning_tokens": 0,
        "total_tokens": prompt + completion,
    }


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_plain_request_usage_cost_and_ledger(
    stack: Stack, fakes: dict[str, FakeUpstream], provider: str
) -> None:
    fake = fakes[provider]
    fake.behave(
        Behavior(text="Bonjour, world.", prompt_tokens=1234, completion_tokens=56, cached_tokens=1000)
    )
    r = await invoke(stack, model=MODELS[provider], max_tokens=64, temperature=0.3)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["message"] == {"role": "assistant", "content": "Bonjour, world."}
    assert body["finish_reason"] == "stop"
    assert body["provider"] == provider
    usage = expected_usage(provider, 1234, 56, 1000)
    assert body["usage"] == usage
    cost = cost_usd(PRICES[provider], 1234, 56, usage["cached_tokens"])
    assert Decimal(body["cost_usd"]) == cost and cost > 0

    row = await ledger_row(stack, body["request_id"])
    assert row["status"] == "ok" and row["provider"] == provider
    assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]) == (
        1234,
        56,
        usage["cached_tokens"],
    )
    assert Decimal(row["cost_usd"]) == cost

    # The upstream saw the provider's own request shape, with the deployment's key.
    seen = fake.last()
    assert seen.model == MODELS[provider].split("/", 1)[1]
    assert not seen.stream
    if provider == "anthropic":
        assert seen.headers["x-api-key"] == KEYS["anthropic"]
        assert seen.headers["anthropic-version"] == "2023-06-01"
        assert seen.body["system"] == "Be brief."
        assert seen.body["messages"] == [
            {"role": "user", "content": [{"type": "text", "text": "hello there"}]}
        ]
        assert seen.body["max_tokens"] == 64
    elif provider == "gemini":
        assert seen.headers["x-goog-api-key"] == KEYS["gemini"]
        assert seen.body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
        assert seen.body["contents"] == [{"role": "user", "parts": [{"text": "hello there"}]}]
        assert seen.body["generationConfig"] == {"temperature": 0.3, "maxOutputTokens": 64}
    else:
        assert seen.headers["authorization"] == f"Bearer {KEYS[provider]}"
        assert seen.body["messages"][0] == {"role": "system", "content": "Be brief."}
        max_field = "max_completion_tokens" if provider == "openai" else "max_tokens"
        assert seen.body[max_field] == 64


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_streaming_chunks_then_exact_usage(
    stack: Stack, fakes: dict[str, FakeUpstream], provider: str
) -> None:
    fakes[provider].behave(
        Behavior(text="one two three four five", prompt_tokens=321, completion_tokens=5, cached_tokens=300)
    )
    r = await invoke(stack, model=MODELS[provider], stream=True)
    assert r.status_code == 200, r.text
    events = sse_events(r.text)
    kinds = [k for k, _ in events]
    assert kinds[-1] == "final" and set(kinds[:-1]) == {"chunk"} and len(kinds) >= 3
    text = "".join(data["delta"] for kind, data in events if kind == "chunk")
    assert text == "one two three four five"
    final = events[-1][1]
    assert final["message"]["content"] == text
    usage = expected_usage(provider, 321, 5, 300)
    assert final["usage"] == usage
    cost = cost_usd(PRICES[provider], 321, 5, usage["cached_tokens"])
    assert Decimal(final["cost_usd"]) == cost
    row = await ledger_row(stack, final["request_id"])
    assert row["stream"] is True and row["status"] == "ok"
    assert Decimal(row["cost_usd"]) == cost and row["completion_tokens"] == 5
    seen = fakes[provider].last()
    assert seen.stream
    if provider in ("openai", "local"):
        assert seen.body["stream_options"] == {"include_usage": True}
    if provider == "mistral":
        assert "stream_options" not in seen.body  # Mistral rejects it (the fake answers 422 like the API)
    if provider == "gemini":
        assert seen.path.endswith(":streamGenerateContent") and seen.query == {"alt": "sse"}


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("stream", [False, True])
async def test_tool_calls(stack: Stack, fakes: dict[str, FakeUpstream], provider: str, stream: bool) -> None:
    fakes[provider].behave(Behavior(tool_call=("get_weather", {"city": "Paris"})))
    r = await invoke(
        stack,
        model=MODELS[provider],
        stream=stream,
        tools=[WEATHER_TOOL],
        tool_choice="required",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    )
    assert r.status_code == 200, r.text
    if stream:
        events = sse_events(r.text)
        deltas = [t for kind, data in events if kind == "chunk" for t in data.get("tool_calls", [])]
        assert deltas and deltas[0]["name"] == "get_weather"
        assert orjson.loads("".join(d["arguments"] for d in deltas)) == {"city": "Paris"}
        body = events[-1][1]
    else:
        body = r.json()
    assert body["finish_reason"] == "tool_calls"
    [call] = body["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather" and call["id"]
    assert orjson.loads(call["function"]["arguments"]) == {"city": "Paris"}

    sent = fakes[provider].last().body
    if provider == "anthropic":
        assert sent["tools"][0]["input_schema"]["required"] == ["city"]
        assert sent["tool_choice"] == {"type": "any"}
    elif provider == "gemini":
        declaration = sent["tools"][0]["functionDeclarations"][0]
        assert declaration["name"] == "get_weather" and declaration["parametersJsonSchema"]["required"] == [
            "city"
        ]
        assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    else:
        assert sent["tools"][0]["function"]["name"] == "get_weather"
        assert sent["tool_choice"] == ("any" if provider == "mistral" else "required")


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_tool_results_and_images_reach_the_upstream_in_its_shape(
    stack: Stack, fakes: dict[str, FakeUpstream], provider: str
) -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture, and the weather there?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'},
    ]
    r = await invoke(stack, model=MODELS[provider], messages=messages, tools=[WEATHER_TOOL])
    assert r.status_code == 200, r.text
    sent = fakes[provider].last().body
    if provider == "anthropic":
        user, assistant, result = sent["messages"]
        assert user["content"][1] == {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": PNG},
        }
        assert assistant["content"] == [
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}
        ]
        assert result == {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": '{"temp_c": 21}'}],
        }
    elif provider == "gemini":
        user, model, result = sent["contents"]
        assert user["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": PNG}}
        assert model == {
            "role": "model",
            "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}],
        }
        assert result == {
            "role": "user",
            "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp_c": 21}}}],
        }
    else:
        user, assistant, result = sent["messages"]
        assert user["content"][1] == {
            "type": "image_url",
            "image_url": {"url": f"data:image/png;base64,{PNG}"},
        }
        assert assistant["tool_calls"][0]["function"] == {
            "name": "get_weather",
            "arguments": '{"city":"Paris"}',
        }
        assert result == {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'}


# (provider, behaviour, HTTP status at the gateway, neutral code, upstream status in the attempt)
RATE_LIMITED_MODELS = {"openai": "openai-rl/gpt-4o-mini", "gemini": "gemini-rl/gemini-2.5-flash"}
AUTH_FAILED_MODELS = {
    "anthropic": "anthropic-auth/claude-haiku-4-5",
    "gemini": "gemini-auth/gemini-2.5-flash",
    "mistral": "mistral-auth/mistral-small-latest",
}
ERROR_CASES = [
    ("openai", Behavior(status=400), 400, "invalid_request", 400),
    # The provider refusing the gateway's own key: a 502 of its own, never the caller's 401.
    ("anthropic", Behavior(status=401), 502, "provider_auth_failed", 401),
    ("gemini", Behavior(status=401), 502, "provider_auth_failed", 400),  # Gemini: 400 API_KEY_INVALID
    ("mistral", Behavior(status=403), 502, "provider_auth_failed", 403),
    ("openai", Behavior(status=404), 404, "not_found", 404),
    ("mistral", Behavior(status=422), 422, "unprocessable", 422),
    ("local", Behavior(status=408), 504, "timeout", 408),
    ("openai", Behavior(status=429, retry_after="7"), 429, "rate_limited", 429),
    ("gemini", Behavior(status=429), 429, "rate_limited", 429),  # RetryInfo retryDelay 17s
    ("anthropic", Behavior(status=500), 502, "upstream_error", 500),
    ("gemini", Behavior(status=503), 503, "unavailable", 503),
    ("anthropic", Behavior(status=529), 503, "overloaded", 529),
    ("mistral", Behavior(status=502), 502, "upstream_error", 502),
]


@pytest.mark.parametrize(("provider", "behavior", "status", "code", "upstream"), ERROR_CASES)
async def test_upstream_errors_map_to_one_neutral_error(
    stack: Stack,
    fakes: dict[str, FakeUpstream],
    provider: str,
    behavior: Behavior,
    status: int,
    code: str,
    upstream: int,
) -> None:
    fakes[provider].behave(behavior)
    model = {"rate_limited": RATE_LIMITED_MODELS, "provider_auth_failed": AUTH_FAILED_MODELS}.get(
        code, MODELS
    )[provider]
    r = await invoke(stack, model=model)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code
    assert provider.replace("local", "local") in error["message"]
    if code == "rate_limited":
        assert r.headers["retry-after"] == ("7" if provider == "openai" else "17")
    row = await ledger_row(stack, error["request_id"])
    assert row["status"] == "error" and row["error_code"] == code
    attempts = await wait_for_rows(
        stack.nats.url,
        "SELECT http_status, error_code FROM attempts FINAL WHERE request_id = {id:String}",
        1,
        {"id": error["request_id"]},
    )
    assert attempts == [{"http_status": upstream, "error_code": code}]


async def test_connect_error_and_timeouts(stack: Stack, fakes: dict[str, FakeUpstream]) -> None:
    r = await invoke(stack, model="dead/gpt")  # nothing listens on its port
    assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
    assert "could not connect" in r.json()["error"]["message"]

    fakes["openai"].behave(Behavior(delay_s=4), times=1)  # no headers within first_byte_s=1
    r = await invoke(stack, model="openai-tight/gpt-4o-mini", stream=True)
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
    assert "first byte" in r.json()["error"]["message"]

    fakes["openai"].behave(Behavior(delay_s=4), times=1)  # a non-stream answer past total_s=2
    r = await invoke(stack, model="openai-tight/gpt-4o-mini")
    assert r.status_code == 504 and "total" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("provider", "behavior", "code", "needle"),
    [
        (
            "openai",
            Behavior(text="a b c d e f", disconnect_after=2),
            "upstream_error",
            "closed the connection",
        ),
        ("anthropic-tight", Behavior(text="a b c d e f", stall_after=2), "timeout", "between chunks"),
        ("gemini", Behavior(text="a b c d e f", malformed_after=2), "upstream_error", "malformed"),
        ("anthropic", Behavior(text="a b c d e f", error_event_after=2), "overloaded", "overloaded_error"),
        (
            "mistral",
            Behavior(text="a b c d e f", disconnect_after=3),
            "upstream_error",
            "closed the connection",
        ),
    ],
)
async def test_a_stream_cut_mid_way_ends_with_an_error_event(
    stack: Stack, fakes: dict[str, FakeUpstream], provider: str, behavior: Behavior, code: str, needle: str
) -> None:
    tight = provider == "anthropic-tight"
    fakes["anthropic" if tight else provider].behave(behavior)
    r = await invoke(
        stack, model="anthropic-tight/claude-haiku-4-5" if tight else MODELS[provider], stream=True
    )
    assert r.status_code == 200  # the first chunks were already on their way
    events = sse_events(r.text)
    assert [k for k, _ in events] == ["chunk"] * len(events[:-1]) + ["error"]
    assert len(events) >= 2
    error = events[-1][1]["error"]
    assert error["code"] == code and needle in error["message"]
    row = await ledger_row(stack, error["request_id"])
    assert row["status"] == "error" and row["error_code"] == code
    # The chunks that did reach the client are still billed.
    assert row["completion_tokens"] > 0 and Decimal(row["cost_usd"]) > 0


async def test_stream_failing_before_its_first_chunk_fails_over(
    stack: Stack, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["openai"].behave(Behavior(status=503))
    fakes["backup"].behave(Behavior(text="from the backup"))
    r = await invoke(stack, model="failover", strategy={"quality": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["rationale"]["winner"] == "openai-primary/gpt-4o-mini"
    assert body["deployment"] == "openai-backup/gpt-4o-mini"
    assert body["message"]["content"] == "from the backup"
    assert [(a["deployment"], a["status"]) for a in body["attempts"]] == [
        ("openai-primary/gpt-4o-mini", "error"),
        ("openai-backup/gpt-4o-mini", "ok"),
    ]
    # Two deployments of one provider, each with its own key and base URL.
    assert fakes["openai"].last().headers["authorization"] == f"Bearer {KEYS['openai']}"
    assert fakes["backup"].last().headers["authorization"] == f"Bearer {KEYS['backup']}"


async def test_client_going_away_cancels_the_upstream_and_bills_what_was_used(
    stack: Stack, fakes: dict[str, FakeUpstream]
) -> None:
    words = " ".join(f"word{i}" for i in range(40))
    fakes["anthropic"].behave(Behavior(text=words, prompt_tokens=777, chunk_delay_s=0.15))
    async with (
        httpx.AsyncClient(base_url=stack.ingress_url, headers=stack.headers, timeout=30) as http,
        http.stream(
            "POST", "/llm.invoke", json={"model": MODELS["anthropic"], "messages": HELLO, "stream": True}
        ) as r,
    ):
        request_id = r.headers["x-request-id"]
        received = 0
        async for line in r.aiter_lines():
            if line.startswith("event: chunk"):
                received += 1
                if received == 3:
                    break  # the client goes away
    row = await ledger_row(stack, request_id)
    assert row["status"] == "cancelled" and row["error_code"] == "client_closed"
    # The prompt as Anthropic reported it in message_start; the output at least what was streamed.
    assert row["prompt_tokens"] == 777
    assert 3 <= row["completion_tokens"] < 40
    expected = cost_usd(PRICES["anthropic"], 777, row["completion_tokens"])
    assert Decimal(row["cost_usd"]) == expected
    attempts = orjson.loads(row["attempts"]) if isinstance(row["attempts"], str) else row["attempts"]
    assert attempts[-1]["status"] == "cancelled"
    # The worker closed the upstream connection: the fake saw the client leave mid-stream.
    wait_until(
        lambda: fakes["anthropic"].last().outcome == "client_disconnected", 10, what="upstream disconnect"
    )


async def test_keys_never_reach_responses_logs_or_the_ledger(
    stack: Stack, fakes: dict[str, FakeUpstream]
) -> None:
    # A misbehaving proxy that echoes the key in its error message.
    fakes["mistral"].behave(Behavior(status=400, error_message=f"bad request for key {KEYS['mistral']}"))
    r = await invoke(stack, model=MODELS["mistral"])
    assert r.status_code == 400
    assert KEYS["mistral"] not in r.text
    row = await ledger_row(stack, r.json()["error"]["request_id"])
    assert KEYS["mistral"] not in orjson.dumps(row, default=str).decode()
    await asyncio.sleep(0.2)
    everything = await ledger_sql(stack.nats.url, "SELECT * FROM requests FINAL")
    logs = "".join(service.log() for service in stack.services)
    dump = orjson.dumps(everything, default=str).decode() + logs
    for key in KEYS.values():
        assert key not in dump
    assert stack.api_key not in dump  # nor the caller's gateway key
    assert "Traceback" not in logs  # every upstream failure above was handled, none crashed


# --- Embeddings, token counts and prompt caching, across providers ------------------------------

EMBEDDING_MODELS = {
    "openai": "openai/text-embedding-3-small",
    "gemini": "gemini/gemini-embedding-001",
    "mistral": "mistral/mistral-embed",
    "local": "local/embed",
}
EMBEDDING_PRICES = {"openai": "0.02", "gemini": "0.15", "mistral": "0.10", "local": "0.05"}


async def post(stack: Stack, path: str, body: dict) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.ingress_url, headers=stack.headers, timeout=30) as http:
        return await http.post(path, json=body)


@pytest.mark.parametrize("provider", list(EMBEDDING_MODELS))
async def test_embeddings_in_each_wire_format_priced_and_in_the_ledger(
    stack: Stack, fakes: dict[str, FakeUpstream], provider: str
) -> None:
    texts = ["the quick brown fox", "jumps"]
    r = await post(
        stack,
        "/v1/embeddings",
        {
            "model": EMBEDDING_MODELS[provider],
            "input": texts,
            "dimensions": 4,
            "encoding_format": "base64",
            "user": "user-7",
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and [d["index"] for d in body["data"]] == [0, 1]
    vectors = [list(unpack_base64(d["embedding"])) for d in body["data"]]
    assert vectors == [fake_vector(t, 4) for t in texts]  # float32-exact through the gateway
    if provider == "gemini":  # Gemini reports no tokens for embeddings: the gateway's estimate
        tokens = sum(pessimistic_text_tokens(t) for t in texts)
    else:
        tokens = sum(text_tokens(t) for t in texts)
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    cost = (Decimal(tokens) * Decimal(EMBEDDING_PRICES[provider]) / 1_000_000).quantize(Decimal("1e-10"))
    assert Decimal(body["switchyard"]["cost_usd"]) == cost

    row = await ledger_row(stack, body["switchyard"]["request_id"])
    assert (row["api"], row["status"], row["provider"]) == ("embeddings", "ok", provider)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (tokens, 0)
    assert Decimal(row["cost_usd"]) == cost

    seen = fakes[provider].last()
    if provider == "gemini":
        assert seen.path.endswith("/gemini-embedding-001:batchEmbedContents")
        assert [item["outputDimensionality"] for item in seen.body["requests"]] == [4, 4]
    elif provider == "mistral":  # Mistral's names, and no `user` (it rejects unknown fields)
        assert seen.path == "/v1/embeddings"
        assert seen.body == {
            "model": "mistral-embed",
            "input": texts,
            "output_dimension": 4,
            "encoding_format": "float",
        }
    else:
        assert seen.body["dimensions"] == 4 and seen.body["user"] == "user-7"
        assert seen.body["encoding_format"] == ("base64" if provider == "openai" else "float")


async def test_embedding_errors_take_openai_shape(stack: Stack, fakes: dict[str, FakeUpstream]) -> None:
    # A chat model has no embedding deployment, and a token-array input is refused, both as 400s.
    r = await post(stack, "/v1/embeddings", {"model": MODELS["openai"], "input": "hi"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    r = await post(stack, "/v1/embeddings", {"model": EMBEDDING_MODELS["openai"], "input": [[1, 2, 3]]})
    assert r.status_code == 400 and "token-array" in r.json()["error"]["message"]
    # A chat request never lands on an embedding deployment either.
    r = await post(stack, "/v1/chat/completions", {"model": EMBEDDING_MODELS["openai"], "messages": HELLO})
    assert r.status_code == 400 and "no chat deployment" in r.json()["error"]["message"]
    fakes["openai"].behave(Behavior(status=404))
    r = await post(stack, "/v1/embeddings", {"model": EMBEDDING_MODELS["openai"], "input": "hi"})
    assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"


async def test_count_tokens_exact_on_anthropic_estimated_elsewhere(
    stack: Stack, fakes: dict[str, FakeUpstream]
) -> None:
    body = {
        "model": MODELS["anthropic"],
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "how many tokens is this?"}],
    }
    r = await post(stack, "/v1/messages/count_tokens", body)
    assert r.status_code == 200, r.text
    counted = r.json()
    seen = fakes["anthropic"].last()
    assert seen.path == "/v1/messages/count_tokens" and "max_tokens" not in seen.body
    exact = AnthropicFake.prompt_tokens(seen.body)
    assert counted["input_tokens"] == exact and counted["switchyard"]["estimated"] is False
    row = await ledger_row(stack, counted["switchyard"]["request_id"])
    assert (row["api"], row["prompt_tokens"], row["completion_tokens"]) == ("count_tokens", exact, 0)
    assert Decimal(row["cost_usd"]) == 0  # counting is free

    before = len(fakes["openai"].requests)
    r = await post(stack, "/v1/messages/count_tokens", {**body, "model": MODELS["openai"]})
    assert r.status_code == 200, r.text
    estimate = r.json()
    assert estimate["switchyard"]["estimated"] is True and estimate["input_tokens"] > 0
    assert len(fakes["openai"].requests) == before  # estimated in the gateway: no upstream call
    row = await ledger_row(stack, estimate["switchyard"]["request_id"])
    assert row["prompt_tokens"] == estimate["input_tokens"] and Decimal(row["cost_usd"]) == 0


async def test_anthropic_cache_writes_by_ttl_and_reads_priced_apart(
    stack: Stack, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["anthropic"].behave(
        Behavior(
            text="cached",
            prompt_tokens=2000,
            cached_tokens=300,
            cache_write_tokens=1500,
            cache_write_1h_tokens=500,
            completion_tokens=40,
        )
    )
    r = await invoke(stack, model=MODELS["anthropic"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["usage"] == {
        "prompt_tokens": 2000,
        "completion_tokens": 40,
        "cached_tokens": 300,
        "cache_write_tokens": 1500,
        "cache_write_1h_tokens": 500,
        "reasoning_tokens": 0,
        "total_tokens": 2040,
    }
    # claude-haiku-4-5: input 1.00, cache read 0.10, writes 1.25 (5 min) and 2.00 (1 h), output 5.00
    cost = (
        Decimal(200) * Decimal("1.00")
        + Decimal(300) * Decimal("0.10")
        + Decimal(1000) * Decimal("1.25")
        + Decimal(500) * Decimal("2.00")
        + Decimal(40) * Decimal("5.00")
    ) / 1_000_000
    assert Decimal(body["cost_usd"]) == cost
    row = await ledger_row(stack, body["request_id"])
    assert (row["prompt_tokens"], row["cached_tokens"], row["cache_write_tokens"]) == (2000, 300, 1500)
    assert (row["cache_write_1h_tokens"], row["completion_tokens"]) == (500, 40)
    assert Decimal(row["cost_usd"]) == cost


@pytest.mark.parametrize("provider", ["openai", "gemini"])
async def test_reasoning_tokens_are_output_and_cached_reads_at_the_cached_rate(
    stack: Stack, fakes: dict[str, FakeUpstream], provider: str
) -> None:
    fakes[provider].behave(
        Behavior(
            text="thought", prompt_tokens=1000, cached_tokens=800, completion_tokens=20, reasoning_tokens=30
        )
    )
    r = await invoke(stack, model=MODELS[provider])
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    # OpenAI counts reasoning inside completion_tokens; Gemini reports thoughts apart from the
    # candidates, and the contract adds them (both bill reasoning as output).
    completion = 20 if provider == "openai" else 50
    assert (usage["completion_tokens"], usage["reasoning_tokens"], usage["cached_tokens"]) == (
        completion,
        30,
        800,
    )
    cost = cost_usd(PRICES[provider], 1000, completion, 800)
    assert Decimal(r.json()["cost_usd"]) == cost
    row = await ledger_row(stack, r.json()["request_id"])
    assert (row["reasoning_tokens"], row["completion_tokens"], row["cached_tokens"]) == (30, completion, 800)
    assert Decimal(row["cost_usd"]) == cost


async def test_cache_control_passes_through_from_the_native_api(
    stack: Stack, fakes: dict[str, FakeUpstream]
) -> None:
    ephemeral = {"type": "ephemeral"}
    r = await invoke(
        stack,
        model=MODELS["anthropic"],
        messages=[
            {
                "role": "system",
                "content": [{"type": "text", "text": "Long rules.", "cache_control": ephemeral}],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "text",
                        "text": "A long document.",
                        "cache_control": {"type": "ephemeral", "ttl": "1h"},
                    },
                    {"type": "text", "text": "The question."},
                ],
            },
        ],
        tools=[{**WEATHER_TOOL, "cache_control": ephemeral}],
    )
    assert r.status_code == 200, r.text
    seen = fakes["anthropic"].last().body
    assert seen["system"] == [{"type": "text", "text": "Long rules.", "cache_control": ephemeral}]
    assert seen["tools"][0]["cache_control"] == ephemeral
    assert seen["messages"][0]["content"] == [
        {"type": "text", "text": "A long document.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        {"type": "text", "text": "The question."},
    ]
    # The fake wrote the prefix up to the 1-hour breakpoint: billed at the 1-hour write price.
    usage = r.json()["usage"]
    assert usage["cache_write_tokens"] == usage["cache_write_1h_tokens"] > 0
    row = await ledger_row(stack, r.json()["request_id"])
    assert row["cache_write_1h_tokens"] == usage["cache_write_1h_tokens"]


async def test_anthropic_sdk_count_tokens_and_cache_control_blocks(
    stack: Stack, fakes: dict[str, FakeUpstream]
) -> None:
    """The official `anthropic` SDK through the gateway to an Anthropic deployment: an exact
    count, then a request with cache_control blocks written (5-minute and 1-hour tiers) and read
    back, each checked against its ledger row, cost by token class."""
    rules = "You answer questions about the attached handbook. " * 40
    handbook = "Section 1: every request is routed by measured latency, cost and quality. " * 60
    system = [{"type": "text", "text": rules, "cache_control": {"type": "ephemeral"}}]
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": handbook, "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                {"type": "text", "text": "What is routing based on?"},
            ],
        }
    ]
    async with anthropic.AsyncAnthropic(
        base_url=stack.ingress_url, api_key=stack.api_key, max_retries=0
    ) as claude:
        counted = await claude.messages.count_tokens(
            model=MODELS["anthropic"], system=system, messages=messages
        )
        exact = AnthropicFake.prompt_tokens(fakes["anthropic"].last().body)
        assert counted.input_tokens == exact and counted.model_extra["switchyard"]["estimated"] is False
        row = await ledger_row(stack, counted.model_extra["switchyard"]["request_id"])
        assert (row["api"], row["prompt_tokens"], Decimal(row["cost_usd"])) == ("count_tokens", exact, 0)

        fakes["anthropic"].behave(Behavior(text="Latency, cost and quality.", completion_tokens=6))
        first = await claude.messages.create(
            model=MODELS["anthropic"], max_tokens=64, system=system, messages=messages
        )
        second = await claude.messages.create(
            model=MODELS["anthropic"], max_tokens=64, system=system, messages=messages
        )
    seen = fakes["anthropic"].last().body  # cache_control reached Anthropic unchanged
    assert seen["system"] == system and seen["messages"] == messages

    # First call: the prefix up to the last breakpoint (the 1-hour one) is written.
    written = first.usage.cache_creation_input_tokens
    assert written > 0 and first.usage.cache_read_input_tokens == 0
    assert first.usage.cache_creation.ephemeral_1h_input_tokens == written
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == 0
    # Second call: the same prefix is read.
    assert second.usage.cache_read_input_tokens == written
    assert second.usage.cache_creation_input_tokens == 0
    assert second.usage.input_tokens == first.usage.input_tokens

    price = {
        "input": Decimal("1.00"),
        "read": Decimal("0.10"),
        "write_1h": Decimal("2.00"),
        "out": Decimal("5.00"),
    }
    for message, read, write_1h in ((first, 0, written), (second, written, 0)):
        usage = message.usage
        cost = (
            usage.input_tokens * price["input"]
            + read * price["read"]
            + write_1h * price["write_1h"]
            + usage.output_tokens * price["out"]
        ) / 1_000_000
        info = message.model_extra["switchyard"]
        assert Decimal(info["cost_usd"]) == cost
        row = await ledger_row(stack, info["request_id"])
        prompt = usage.input_tokens + read + write_1h
        assert (row["prompt_tokens"], row["cached_tokens"]) == (prompt, read)
        assert (row["cache_write_tokens"], row["cache_write_1h_tokens"]) == (write_1h, write_1h)
        assert row["completion_tokens"] == usage.output_tokens == 6
        assert Decimal(row["cost_usd"]) == cost
