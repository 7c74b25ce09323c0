"""Pure tests for the estimates and maths behind caps that hold (docs/budgets.md, "The bound"):
per-provider prompt counters, the chain's hold, and the stream check."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal

from services.budget.authority import Authority
from services.providers.execution import AttemptProgress, billed_after, stream_limit
from services.router.reservation import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    authorize_request,
    chain_holds,
    output_allowance,
    worst_cases,
)
from switchyard.catalog import Deployment
from switchyard.errors import GatewayError
from switchyard.pricing import Price, cost_usd
from switchyard.tenancy import Budget, Project, TenancyView, budget_kv_key, project_kv_key
from switchyard.tokens import (
    CL100K,
    DEMO,
    O200K,
    PESSIMISTIC,
    TOOLS_SYSTEM_PROMPT_TOKENS,
    estimate_prompt_tokens,
    pessimistic_text_tokens,
    text_counter,
    tokenizer_for,
)
from switchyard.v1 import budget_pb2, invoke_pb2


def request_of(text: str, max_tokens: int = 0) -> invoke_pb2.InvokeRequest:
    request = invoke_pb2.InvokeRequest(max_tokens=max_tokens)
    request.messages.add(role=invoke_pb2.ROLE_USER).content.add(text=text)
    return request


def dep(id: str, adapter: str = "openai", model: str = "gpt-4o-mini", price: str = "1", **kw) -> Deployment:
    return Deployment(
        id=id, provider=adapter, model=model, adapter=adapter, price=Price.of(price, price), **kw
    )


def test_each_provider_family_gets_its_counter() -> None:
    assert tokenizer_for("openai", "gpt-4o-mini") == O200K
    assert tokenizer_for("openai", "gpt-4.1") == O200K
    assert tokenizer_for("openai", "o3-mini") == O200K
    assert tokenizer_for("openai", "gpt-4-turbo") == CL100K
    assert tokenizer_for("openai", "gpt-3.5-turbo") == CL100K
    assert tokenizer_for("demo", "fast") == DEMO
    for adapter in ("anthropic", "gemini", "mistral", "openai_compat"):
        assert tokenizer_for(adapter, "any") == PESSIMISTIC


def test_the_openai_encodings_load_without_a_network() -> None:
    """The encodings ship in the wheel: a process whose every socket connection fails, with no
    cache folder, still counts (tiktoken alone would try to download them here)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TIKTOKEN_CACHE_DIR": "/nonexistent"}
    code = (
        "import socket\n"
        "def refuse(*args, **kwargs):\n"
        "    raise OSError('network used')\n"
        "socket.socket.connect = socket.socket.connect_ex = socket.create_connection = refuse\n"
        "socket.getaddrinfo = refuse\n"
        "from switchyard.tokens import text_counter\n"
        "print(text_counter('o200k_base')('hello world'), text_counter('cl100k_base')('hello world'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "2"]


def test_openai_counts_are_the_encodings_own() -> None:
    o200k = text_counter(O200K)
    assert o200k("") == 0
    assert o200k("hello world") == 2
    assert text_counter(CL100K)("hello world") == 2
    # CJK: the encoding's count, about one token per character or fewer, never chars / 4.
    cjk = "日本語の文章を書きます。" * 6
    assert len(cjk) // 4 < o200k(cjk) <= len(cjk)


def test_the_pessimistic_count_never_under_counts_non_latin_scripts() -> None:
    assert pessimistic_text_tokens("") == 0
    assert pessimistic_text_tokens("abcdef") == 2  # ASCII at 3 characters per token
    assert pessimistic_text_tokens("abcdefg") == 3
    cjk = "日本語の文章"
    assert pessimistic_text_tokens(cjk) == 2 * len(cjk)  # 3 UTF-8 bytes: 2 tokens each
    assert pessimistic_text_tokens("привет") == 6  # 2 bytes: 1 token per character
    assert pessimistic_text_tokens("😀😀") == 6  # 4 bytes: 3 tokens each
    assert pessimistic_text_tokens("ab日") == 1 + 2
    # Never above one token per UTF-8 byte, the byte-level BPE ceiling.
    for text in ("abc", cjk, "привет мир", "😀 ok"):
        assert pessimistic_text_tokens(text) <= len(text.encode())


def test_prompt_estimates_add_framing_and_the_tool_system_prompt_only_where_pessimistic() -> None:
    request = request_of("hello")
    assert estimate_prompt_tokens(request, O200K) == 3 + 4 + 1
    assert estimate_prompt_tokens(request, DEMO) == estimate_prompt_tokens(request)  # chars / 4
    request.tools.add(name="f", description="", parameters_json="{}")
    with_tools = estimate_prompt_tokens(request, PESSIMISTIC)
    assert with_tools == 3 + 4 + 2 + pessimistic_text_tokens("f{}") + TOOLS_SYSTEM_PROMPT_TOKENS
    assert estimate_prompt_tokens(request, O200K) < with_tools


def test_the_output_allowance_is_max_tokens_else_the_declared_maximum_else_the_default() -> None:
    assert output_allowance(100, dep("a", max_output_tokens=16_384)) == 100
    assert output_allowance(0, dep("a", max_output_tokens=16_384)) == 16_384
    assert output_allowance(0, dep("a")) == DEFAULT_MAX_OUTPUT_TOKENS


def test_each_candidate_is_priced_with_its_own_prompt_estimate() -> None:
    cjk = "日本語の文章を書きます。" * 6
    cases = worst_cases(request_of(cjk, 16), [dep("oai"), dep("claude", adapter="anthropic", model="c")])
    oai, claude = cases
    assert oai.prompt_tokens == estimate_prompt_tokens(request_of(cjk), O200K)
    assert claude.prompt_tokens == estimate_prompt_tokens(request_of(cjk), PESSIMISTIC) > oai.prompt_tokens
    assert claude.cost_usd == cost_usd(Price.of("1", "1"), claude.prompt_tokens, 16)


def test_the_authoritys_ask_carries_the_first_hold_and_every_candidates_worst_case() -> None:
    request = request_of("hello there", 16)
    request.request_id, request.project_id, request.agent_id, request.key_id = "r1", "p", "a", "k"
    request.deadline_unix_ms, request.received_unix_ms = 9_000, 1_000
    cases = worst_cases(request, [dep("oai", price="3"), dep("mini")])
    holds = chain_holds([c.cost_usd for c in cases])
    ask = authorize_request(request, "oai", cases, holds, estimated_tokens=42)
    assert (ask.request_id, ask.project_id, ask.agent_id, ask.key_id) == ("r1", "p", "a", "k")
    assert (ask.deployment_id, ask.estimated_tokens) == ("oai", 42)
    assert (ask.deadline_unix_ms, ask.received_unix_ms) == (9_000, 1_000)
    assert Decimal(ask.max_cost_usd) == holds[0] == cases[0].cost_usd  # the priciest it can reach
    assert [
        (c.deployment_id, Decimal(c.max_cost_usd), c.input_tokens, c.output_tokens) for c in ask.candidates
    ] == [
        (case.deployment.id, hold, case.prompt_tokens, case.output_tokens)
        for case, hold in zip(cases, holds, strict=True)
    ]


def test_a_hold_covers_the_priciest_deployment_the_request_can_still_reach() -> None:
    costs = [Decimal("1"), Decimal("100"), Decimal("5"), Decimal("7")]
    # From candidate i the worker may fail over to every one ranked below it, not above.
    assert chain_holds(costs) == [Decimal("100"), Decimal("100"), Decimal("7"), Decimal("7")]
    # With a retry budget of 2 attempts, only the next one is reachable.
    assert chain_holds(costs, max_attempts=2) == [Decimal("100"), Decimal("100"), Decimal("7"), Decimal("7")]
    assert chain_holds([Decimal("1"), Decimal("2"), Decimal("100")], max_attempts=2) == [
        Decimal("2"),
        Decimal("100"),
        Decimal("100"),
    ]
    assert chain_holds([]) == []


def test_the_stream_check_stops_before_the_chunk_that_would_pass_the_hold() -> None:
    deployment = dep("d", price="1000000")  # 1 USD per token, in and out
    request = request_of("hello", 3)
    prompt = estimate_prompt_tokens(request, O200K)
    dispatch = invoke_pb2.Dispatch(reserved_usd=str(prompt + 3))
    progress = AttemptProgress(started_ms=0.0, limit_usd=stream_limit(dispatch), tokenizer=O200K)
    chunk = invoke_pb2.Chunk(delta_text=" word")
    for _ in range(3):
        assert progress.overrun(chunk, request, deployment) is None
        progress.add_chunk(chunk)
    stop = progress.overrun(chunk, request, deployment)
    assert stop is not None and stop.code == "budget_exceeded" and not stop.retryable
    assert cost_usd(deployment.price, *_tokens(progress.usage(request))) == prompt + 3  # delivered
    assert billed_after(stop, progress)


def test_a_reported_prompt_larger_than_the_estimate_stops_the_stream_at_once() -> None:
    deployment = dep("d", adapter="anthropic", model="c", price="1000000")
    request = request_of("hello", 100)
    progress = AttemptProgress(
        started_ms=0.0,
        limit_usd=Decimal(estimate_prompt_tokens(request, PESSIMISTIC) + 100),
        tokenizer=PESSIMISTIC,
    )
    progress.reported = invoke_pb2.Usage(prompt_tokens=500)  # message_start said so
    stop = progress.overrun(invoke_pb2.Chunk(delta_text="Hi"), request, deployment)
    assert stop is not None
    # Billed although nothing reached the client: the provider bills the prompt.
    assert billed_after(stop, progress) and not progress.chunks_sent
    assert not billed_after(GatewayError("unavailable", "x"), progress)


def test_no_cap_no_stream_limit() -> None:
    assert stream_limit(invoke_pb2.Dispatch()) is None
    assert stream_limit(invoke_pb2.Dispatch(reserved_usd="nonsense")) is None
    progress = AttemptProgress(started_ms=0.0, tokenizer=O200K)
    assert progress.overrun(invoke_pb2.Chunk(delta_text="x" * 10_000), request_of("hi"), dep("d")) is None


def _tokens(usage: invoke_pb2.Usage) -> tuple[int, int]:
    return usage.prompt_tokens, usage.completion_tokens


def test_the_authority_names_the_hold_as_a_stream_limit_only_under_a_cap() -> None:
    now = 1_794_000_000_000

    def view(cap: str | None) -> TenancyView:
        tenancy = TenancyView()
        tenancy.apply(project_kv_key("acme"), Project(id="acme").to_bytes())
        if cap is not None:
            budget = Budget(
                scope="project", scope_id="acme", period="day", cap_usd=Decimal(cap), project_id="acme"
            )
            tenancy.apply(budget_kv_key("project", "acme", "day"), budget.to_bytes())
        return tenancy

    def ask(i: int) -> budget_pb2.AuthorizeRequest:
        request = budget_pb2.AuthorizeRequest(
            request_id=f"req_{i}", project_id="acme", max_cost_usd="0.5", received_unix_ms=now
        )
        # The router's chain: the cheap candidate's hold already covers the pricier one below it.
        request.candidates.add(deployment_id="cheap", max_cost_usd="0.5")
        request.candidates.add(deployment_id="pricey", max_cost_usd="0.5")
        return request

    capped = Authority(view("10"))
    first = capped.authorize(ask(1), now)
    assert first.allow and first.held_usd == "0.5" and first.to_proto("req_1").held_usd == "0.5"
    assert capped.authorize(ask(1), now).held_usd == "0.5"  # a router's repeated ask: same limit

    uncapped = Authority(view(None)).authorize(ask(2), now)
    assert uncapped.allow and uncapped.held_usd == ""
