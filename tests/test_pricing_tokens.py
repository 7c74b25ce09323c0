from decimal import Decimal

from switchyard.pricing import Price, cost_usd, format_usd, max_cost_usd
from switchyard.tokens import estimate_prompt_tokens, estimate_text_tokens, has_images, last_user_text
from switchyard.v1 import invoke_pb2


def test_cost_is_exact_decimal_per_million() -> None:
    price = Price.of("0.15", "0.60")
    assert cost_usd(price, 1_000_000, 0) == Decimal("0.15")
    assert cost_usd(price, 12, 40) == Decimal("0.0000258")  # 12*0.15e-6 + 40*0.6e-6
    # float arithmetic would print 2.58e-05 with rounding noise; Decimal is exact
    assert format_usd(cost_usd(price, 12, 40)) == "0.0000258"


def test_cached_tokens_use_the_cached_price_and_never_exceed_prompt() -> None:
    price = Price.of("2.50", "10.00", "1.25")
    full = cost_usd(price, 1000, 0)
    half_cached = cost_usd(price, 1000, 0, cached_tokens=500)
    assert full == Decimal("0.0025")
    assert half_cached == Decimal("0.001875")
    assert cost_usd(price, 10, 0, cached_tokens=99) == cost_usd(price, 10, 0, cached_tokens=10)
    no_cache_price = Price.of("1", "1")
    assert cost_usd(no_cache_price, 100, 0, cached_tokens=50) == cost_usd(no_cache_price, 100, 0)


def test_max_cost_reserves_all_output_tokens() -> None:
    price = Price.of("1", "2")
    assert max_cost_usd(price, 100, 1000) == cost_usd(price, 100, 1000) == Decimal("0.0021")


def test_token_estimates_grow_with_text_images_and_tools() -> None:
    assert estimate_text_tokens("") == 0
    assert estimate_text_tokens("abcd") == 1
    assert estimate_text_tokens("abcde") == 2
    request = invoke_pb2.InvokeRequest()
    request.messages.add(role=invoke_pb2.ROLE_USER).content.add(text="x" * 400)
    base = estimate_prompt_tokens(request)
    assert base >= 100
    request.messages[0].content.add(image=invoke_pb2.ImagePart(url="https://example.test/a.png"))
    with_image = estimate_prompt_tokens(request)
    assert with_image > base and has_images(request)
    request.tools.add(name="lookup", description="find things", parameters_json='{"type":"object"}')
    assert estimate_prompt_tokens(request) > with_image


def test_last_user_text_skips_other_roles() -> None:
    request = invoke_pb2.InvokeRequest()
    request.messages.add(role=invoke_pb2.ROLE_USER).content.add(text="first")
    request.messages.add(role=invoke_pb2.ROLE_ASSISTANT).content.add(text="answer")
    request.messages.add(role=invoke_pb2.ROLE_USER).content.add(text="second")
    request.messages.add(role=invoke_pb2.ROLE_TOOL).content.add(text="tool output")
    assert last_user_text(request) == "second"
