"""The TOML config's schema: what each table may hold, checked once at start-up.

Every table is a pydantic model that forbids unknown keys, so a misspelt option stops the
start with a message naming it and where it is (`deployments[openai/gpt-4o].optionz: unknown
option`) instead of being silently ignored. `parse_config` checks a whole document;
`switchyard.catalog.build_catalog` then turns it into the Catalog, and the router checks its
`[router]` table (services/router/tuning.py) and the worker each adapter's `options`
(services/providers/adapters) with the same `ConfigError` messages. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from switchyard.vocab import DEFAULT_PRESET, DeploymentKind, StrategyPreset, is_member

# The retry budget: the most upstream attempts one request may make (the fallback chain's
# length). The router's `[router] max_attempts` default, and the worker's when a dispatch
# carries none.
DEFAULT_MAX_ATTEMPTS = 3

WEIGHT_NAMES = ("latency", "cost", "quality")
LIMIT_NAMES = ("rpm", "tpm", "input_tpm", "output_tpm", "max_concurrent")


def _decimal_text(value: int | float | str) -> int | float | str:
    try:
        if Decimal(str(value)).is_finite():
            return value
    except InvalidOperation:
        pass
    raise ValueError(f"must be a number, not {value!r}")


# Kept as written: prices become exact decimals from their text (switchyard.pricing).
Number = Annotated[int | float | str, AfterValidator(_decimal_text)]


class ConfigError(ValueError):
    """A config that cannot run: the message names each bad key and where it is."""


class Table(BaseModel):
    """A TOML table: unknown keys are errors, values are read-only."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PriceConfig(Table):
    """USD per 1M tokens, per token class (switchyard/pricing.py)."""

    input: Number = 0
    output: Number = 0
    cached_input: Number | None = None  # cache reads
    cache_write: Number | None = None  # cache writes, 5-minute TTL
    cache_write_1h: Number | None = None  # cache writes, 1-hour TTL


class TimeoutsConfig(Table):
    connect_s: float | None = None
    first_byte_s: float | None = None
    between_chunks_s: float | None = None
    total_s: float | None = None


class LimitsConfig(Table):
    """The provider's rate limits for a deployment (docs/quotas.md); 0 = no limit."""

    rpm: int = 0
    tpm: int = 0
    input_tpm: int = 0
    output_tpm: int = 0
    max_concurrent: int = 0


class DeploymentConfig(Table):
    """One `[[deployments]]` entry. `options` are the adapter's: the worker checks them against
    its adapter's own model."""

    id: str | None = None
    provider: str
    model: str
    adapter: str | None = None
    # chat (the default) or embedding: an embedding deployment serves only /v1/embeddings
    kind: DeploymentKind = DeploymentKind.CHAT
    price: PriceConfig | None = None
    quality: float = 0.5
    base_url: str = ""
    api_key: str = Field(default="", repr=False)
    api_key_env: str = ""
    require_key: bool = True  # false: the deployment stays on when its key variable is unset
    timeouts: TimeoutsConfig = TimeoutsConfig()
    options: dict[str, Any] = {}
    limits: LimitsConfig = LimitsConfig()
    # The most a call can answer (tokens), for budget holds of requests without max_tokens
    # (docs/budgets.md); 0: the gateway's default allowance.
    max_output_tokens: int = Field(default=0, ge=0)

    @property
    def deployment_id(self) -> str:
        return self.id or f"{self.provider}/{self.model}"

    @field_validator("limits", mode="before")
    @classmethod
    def _whole_limits(cls, raw: Any, info: Any) -> Any:
        # Strict: a limit of 1.5 or true is a mistake, not a number to round.
        data = info.data
        name = data.get("id") or f"{data.get('provider')}/{data.get('model')}"
        if not isinstance(raw, Mapping) or set(raw) - set(LIMIT_NAMES):
            raise ValueError(f"deployment {name!r}: limits must be a table of {', '.join(LIMIT_NAMES)}")
        for key, value in raw.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"deployment {name!r}: limits.{key} must be a whole number >= 0")
        return raw


class HedgeConfig(Table):
    """A route's hedging policy (docs/routing.md, "Hedged requests"): when the first attempt has
    no first token after the delay, a second attempt starts on the next deployment of the chain.

    The delay is `delay_ms` when set, else the `percentile` of the first deployment's observed
    time to first token (whole-call latency for plain requests), never below `min_delay_ms`;
    `min_delay_ms` is also the delay until `min_samples` were observed."""

    enabled: bool = True
    delay_ms: float = Field(default=0.0, ge=0)
    percentile: float = Field(default=90.0, gt=0, lt=100)
    min_delay_ms: float = Field(default=50.0, ge=1)
    min_samples: int = Field(default=20, ge=1)
    max_hedges: int = Field(default=1, ge=1, le=3)
    max_share: float = Field(default=0.1, gt=0, le=1)
    window_s: float = Field(default=60.0, gt=0)


class CacheConfig(Table):
    """A route's response cache (docs/routing.md, "Response cache"): a successful answer is
    kept `ttl_s` seconds and a request equal to it, from the same project, is answered from it
    at no cost. Opt-in: a route without this table caches only requests that ask for it."""

    enabled: bool = True
    ttl_s: float = Field(default=300.0, gt=0, le=7 * 86400)


class DowngradeConfig(Table):
    """A route's downgrade policy (docs/routing.md, "Budget-aware downgrade"): once a budget of
    a request's scope (its project, agent or key) has `at_pct` of its cap spent or held, the
    route ranks its deployments by `strategy` (default cheapest: the weights move toward cost),
    so work keeps flowing on cheaper deployments instead of being refused at 100 %."""

    at_pct: float = Field(default=80.0, gt=0, le=100)
    strategy: str = StrategyPreset.CHEAPEST

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, name: str) -> str:
        if not is_member(StrategyPreset, name):
            raise ValueError(f"strategy {name!r} is not one of {', '.join(StrategyPreset)}")
        return name


class RouteConfig(Table):
    """One `[routes.<name>]` table."""

    deployments: list[str] = []
    strategy: str = DEFAULT_PRESET
    # Explicit scoring weights; win over `strategy`.
    weights: dict[str, float] | None = None
    hedge: HedgeConfig | None = None
    cache: CacheConfig | None = None
    downgrade: DowngradeConfig | None = None
    # The route's requests act on the world (a tool call that books, a write): never run twice.
    side_effects: bool = False

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, name: str) -> str:
        if not is_member(StrategyPreset, name):
            raise ValueError(f"strategy {name!r} is not one of {', '.join(StrategyPreset)}")
        return name

    @field_validator("weights", mode="before")
    @classmethod
    def _weight_table(cls, raw: Any) -> Any:
        if raw is not None and (not isinstance(raw, Mapping) or set(raw) - set(WEIGHT_NAMES)):
            raise ValueError(f"weights must be a table of {', '.join(WEIGHT_NAMES)}")
        return raw

    @field_validator("weights")
    @classmethod
    def _some_weight(cls, weights: dict[str, float] | None) -> dict[str, float] | None:
        if weights is not None and (any(v < 0 for v in weights.values()) or sum(weights.values()) <= 0):
            raise ValueError("weights must be >= 0 and not all zero")
        return weights


class RuleMatch(Table):
    """A rule's conditions (docs/routing.md); a misspelt one must not match every request."""

    metadata: dict[str, str | list[str]] = {}
    min_prompt_tokens: int | None = None
    max_prompt_tokens: int | None = None
    tools: bool | None = None
    images: bool | None = None
    last_user_regex: str | None = None

    @field_validator("last_user_regex")
    @classmethod
    def _compiles(cls, regex: str | None) -> str | None:
        if regex is not None:
            try:
                re.compile(regex)
            except re.error as exc:
                raise ValueError(f"bad last_user_regex: {exc}") from None
        return regex


class RuleConfig(Table):
    """One `[[rules]]` entry."""

    name: str = ""
    route: str = ""
    applies_to: str | list[str] = ["auto"]
    match: RuleMatch = RuleMatch()

    @model_validator(mode="after")
    def _named(self) -> RuleConfig:
        if not self.name or not self.route:
            raise ValueError("a rule needs a name and a route")
        return self


class DemoConfig(Table):
    enabled: bool = True  # the built-in demo deployments demo/fast and demo/smart


class ProviderPriceConfig(Table):
    input: Number
    output: Number
    cached_input: Number | None = None
    cache_write: Number | None = None
    cache_write_1h: Number | None = None


class ProviderConfig(Table):
    """One `[providers.<name>]` table: settings for a known provider's discovered deployments
    (switchyard/provider_defaults.py), or price overrides for any provider."""

    enabled: bool = True
    api_key: str = Field(default="", repr=False)
    api_key_env: str = ""
    base_url: str = ""
    models: list[str] = []
    quality: dict[str, float] = {}
    timeouts: TimeoutsConfig | None = None
    options: dict[str, Any] | None = None
    prices: dict[str, ProviderPriceConfig] = {}


class ConfigFile(Table):
    """The whole TOML document."""

    demo: DemoConfig = DemoConfig()
    deployments: list[DeploymentConfig] = []
    routes: dict[str, RouteConfig] = {}
    aliases: dict[str, str] = {}
    rules: list[RuleConfig] = []
    providers: dict[str, ProviderConfig] = {}
    # The router's tuning: checked by the router (services/router/tuning.py).
    router: dict[str, Any] = {}


def parse_config(document: Mapping[str, Any]) -> ConfigFile:
    """The parsed TOML document, checked; ConfigError names every bad key."""
    return validated(ConfigFile, document)


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], raw: Any, where: str = "") -> M:
    """`raw` as `model`, or ConfigError whose parts say `<where>.<key>: <what is wrong>`."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe(exc, raw, where)) from None


def describe(exc: ValidationError, raw: Any, where: str = "") -> str:
    """One `place: problem` per error, joined by "; ". List entries are named by their id or
    name, so the place reads as the file does: `deployments[openai/gpt-4o].optionz`."""
    lines = []
    for error in exc.errors():
        place = _place(error["loc"], raw, where)
        lines.append(f"{place or 'config'}: {_problem(error, place)}")
    return "; ".join(dict.fromkeys(lines))


def _place(loc: Sequence[str | int], raw: Any, where: str) -> str:
    """`where` and the dotted path of `loc`, list indices replaced by the entry's id or name."""
    out = where
    node = raw
    for part in loc:
        if not isinstance(node, Mapping | list):
            break  # past the data: the rest of `loc` names a branch of a union type, not a key
        node = _child(node, part)
        if isinstance(part, int):
            out += f"[{_entry_name(node) or part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _child(node: Any, part: str | int) -> Any:
    if isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node):
        return node[part]
    if isinstance(node, Mapping):
        return node.get(part)
    return None


def _entry_name(entry: Any) -> str:
    if not isinstance(entry, Mapping):
        return ""
    if entry.get("id") or entry.get("name"):
        return str(entry.get("id") or entry.get("name"))
    if entry.get("provider") and entry.get("model"):
        return f"{entry['provider']}/{entry['model']}"
    return ""


def _problem(error: Any, place: str) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        if ".match." in place:
            return "unknown match key"
        if place.startswith("router."):
            return "unknown setting"
        return "unknown table" if "." not in place and "[" not in place else "unknown option"
    if kind == "missing":
        return "required"
    if kind == "value_error":
        return str(error["ctx"]["error"])
    if kind == "int_from_float":
        return f"must be a whole number, not {error['input']!r}"
    if kind in ("int_parsing", "float_parsing"):
        return f"must be a number, not {error['input']!r}"
    return str(error["msg"]).lower()
