"""Provider rate-limit headers -> ProviderRateLimits. Pure: headers and the time in, a message out.

Two header families (docs/quotas.md):

OpenAI and OpenAI-compatible servers (Groq, Mistral's la Plateforme, vLLM behind a proxy, Azure):
    x-ratelimit-limit-requests: 5000          x-ratelimit-limit-tokens: 160000
    x-ratelimit-remaining-requests: 4999      x-ratelimit-remaining-tokens: 159976
    x-ratelimit-reset-requests: 12ms          x-ratelimit-reset-tokens: 6m0s
  resets are Go-style durations ("1s", "6m0s", "1h2m3.5s", "20ms"); Azure sends -1 for unknown.

Anthropic:
    anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}
  resets are RFC 3339 instants ("2025-08-21T12:40:59Z").

A value that does not parse is left unset: a quirky header must never fail a request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime

from switchyard import units
from switchyard.v1 import events_pb2

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}

# (our field stem, OpenAI header dimension, Anthropic header dimension)
_DIMENSIONS = (
    ("requests", "requests", "requests"),
    ("tokens", "tokens", "tokens"),
    ("input_tokens", None, "input-tokens"),
    ("output_tokens", None, "output-tokens"),
)


def duration_s(text: str) -> float | None:
    """A Go-style duration ("6m0s", "12ms", "1h2m3.5s") or plain seconds ("2.5") in seconds."""
    text = text.strip()
    if not text:
        return None
    try:
        return max(float(text), 0.0)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(f"{n}{u}" for n, u in parts) != text:
        return None
    return sum(float(number) * _UNIT_S[unit] for number, unit in parts)


def until_s(text: str, now: datetime) -> float | None:
    """Seconds from `now` to an RFC 3339 instant (0 if it has passed)."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


def _count(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(float(text.strip()))
    except ValueError:
        return None
    return value if value >= 0 else None  # Azure's -1: unknown


def parse_rate_limits(
    headers: Mapping[str, str], now: datetime | None = None
) -> events_pb2.ProviderRateLimits | None:
    """What the response's rate-limit headers say; None when it carried none we understand."""
    lowered = {k.lower(): v for k, v in headers.items()}
    now = now or datetime.now(UTC)
    out = events_pb2.ProviderRateLimits()
    found = False
    for stem, openai, anthropic in _DIMENSIONS:
        limit = remaining = reset = None
        if anthropic is not None and f"anthropic-ratelimit-{anthropic}-remaining" in lowered:
            prefix = f"anthropic-ratelimit-{anthropic}"
            limit = _count(lowered.get(f"{prefix}-limit"))
            remaining = _count(lowered.get(f"{prefix}-remaining"))
            raw_reset = lowered.get(f"{prefix}-reset")
            reset = until_s(raw_reset, now) if raw_reset else None
        elif openai is not None and f"x-ratelimit-remaining-{openai}" in lowered:
            limit = _count(lowered.get(f"x-ratelimit-limit-{openai}"))
            remaining = _count(lowered.get(f"x-ratelimit-remaining-{openai}"))
            raw_reset = lowered.get(f"x-ratelimit-reset-{openai}")
            reset = duration_s(raw_reset) if raw_reset else None
        if remaining is None:
            continue
        found = True
        setattr(out, f"{stem}_remaining", remaining)
        if reset is not None:
            setattr(out, f"{stem}_reset_ms", round(units.ms(reset), 3))
        if limit is not None and stem in ("requests", "tokens"):
            setattr(out, f"{stem}_limit", limit)
    return out if found else None
