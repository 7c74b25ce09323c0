"""Cost in USD, exact: Decimal arithmetic on provider-reported usage and per-1M prices."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

MILLION = Decimal(1_000_000)
# Ten decimal places: a single token of the cheapest model stays non-zero.
COST_QUANTUM = Decimal("0.0000000001")


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens."""

    input: Decimal = Decimal(0)
    output: Decimal = Decimal(0)
    cached_input: Decimal | None = None  # None: cached tokens cost the input price

    @classmethod
    def of(
        cls,
        input: float | str | Decimal,
        output: float | str | Decimal,
        cached_input: float | str | Decimal | None = None,
    ) -> Price:
        return cls(
            Decimal(str(input)),
            Decimal(str(output)),
            None if cached_input is None else Decimal(str(cached_input)),
        )


def cost_usd(price: Price, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> Decimal:
    """Cost of one call. `prompt_tokens` includes the cached ones (as OpenAI and Gemini report)."""
    cached = min(cached_tokens, prompt_tokens)
    cached_price = price.input if price.cached_input is None else price.cached_input
    total = (
        Decimal(prompt_tokens - cached) * price.input
        + Decimal(cached) * cached_price
        + Decimal(completion_tokens) * price.output
    ) / MILLION
    return total.quantize(COST_QUANTUM)


def max_cost_usd(price: Price, prompt_tokens: int, max_tokens: int) -> Decimal:
    """The most a call can cost: the budget reservation."""
    return cost_usd(price, prompt_tokens, max_tokens)


def format_usd(amount: Decimal) -> str:
    return format(amount.quantize(COST_QUANTUM).normalize(), "f")
