"""Cost in USD, exact: Decimal arithmetic on provider-reported usage and per-1M prices.

Each token class has its price: plain input, cache reads (`cached_input`), cache writes with
the 5-minute and the 1-hour TTL, and output (reasoning tokens are output tokens, billed at the
output price by every provider). cost = sum of (tokens of a class x its price), as Decimal.
"""

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
    cached_input: Decimal | None = None  # cache reads; None: the input price
    cache_write: Decimal | None = None  # cache writes, 5-minute TTL; None: the input price
    cache_write_1h: Decimal | None = None  # cache writes, 1-hour TTL; None: the 5-minute price

    @classmethod
    def of(
        cls,
        input: float | str | Decimal,
        output: float | str | Decimal,
        cached_input: float | str | Decimal | None = None,
        cache_write: float | str | Decimal | None = None,
        cache_write_1h: float | str | Decimal | None = None,
    ) -> Price:
        return cls(
            Decimal(str(input)),
            Decimal(str(output)),
            _decimal(cached_input),
            _decimal(cache_write),
            _decimal(cache_write_1h),
        )

    @property
    def cache_read_price(self) -> Decimal:
        return self.input if self.cached_input is None else self.cached_input

    @property
    def cache_write_price(self) -> Decimal:
        return self.input if self.cache_write is None else self.cache_write

    @property
    def cache_write_1h_price(self) -> Decimal:
        return self.cache_write_price if self.cache_write_1h is None else self.cache_write_1h


def _decimal(value: float | str | Decimal | None) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def cost_usd(
    price: Price,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
    cache_write_tokens: int = 0,
    cache_write_1h_tokens: int = 0,
) -> Decimal:
    """Cost of one call. `prompt_tokens` includes the cache reads and writes (the contract's
    convention, switchyard/v1 Usage); `cache_write_1h_tokens` are part of `cache_write_tokens`.
    A count larger than the one it is part of is capped (never a negative class)."""
    cached = min(cached_tokens, prompt_tokens)
    written = min(cache_write_tokens, prompt_tokens - cached)
    written_1h = min(cache_write_1h_tokens, written)
    plain = prompt_tokens - cached - written
    total = (
        Decimal(plain) * price.input
        + Decimal(cached) * price.cache_read_price
        + Decimal(written - written_1h) * price.cache_write_price
        + Decimal(written_1h) * price.cache_write_1h_price
        + Decimal(completion_tokens) * price.output
    ) / MILLION
    return total.quantize(COST_QUANTUM)


def max_cost_usd(price: Price, prompt_tokens: int, max_tokens: int) -> Decimal:
    """The most a call can cost: the budget reservation. Every prompt token at the dearest
    input class (a prompt may be written whole to a 1-hour cache, at up to twice the input price)."""
    dearest = max(price.input, price.cache_write_price, price.cache_write_1h_price)
    total = (Decimal(prompt_tokens) * dearest + Decimal(max_tokens) * price.output) / MILLION
    return total.quantize(COST_QUANTUM)


def format_usd(amount: Decimal) -> str:
    return format(amount.quantize(COST_QUANTUM).normalize(), "f")
