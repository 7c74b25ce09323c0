"""Tenancy: projects, agents within a project, API keys and budgets. Pure: no I/O.

The records live in the JetStream KV bucket `switchyard_tenancy` (see tenancy_store.py), one
KV entry per record, and every service that needs them keeps a `TenancyView` fed by a KV watch.

API keys are shown once and stored only as a SHA-256 hash. A key carries 256 random bits, so a
fast hash is enough: there is nothing to brute-force (unlike a password), and a lookup by hash
costs one digest per request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from switchyard.errors import ErrorCode, GatewayError

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
KEY_PREFIX = "sy-"  # the log redaction patterns mask anything shaped like `sy-...`
DEFAULT_THRESHOLDS = (50, 80, 100)
DEFAULT_PROJECT = "default"

ScopeKind = Literal["project", "agent", "key"]
Period = Literal["day", "month", "total"]
PERIODS: tuple[str, ...] = ("day", "month", "total")


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore")

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))


class Limits(BaseModel):
    """Rate limits of a project or a key; None = unlimited."""

    model_config = ConfigDict(extra="forbid")
    rps: float | None = Field(default=None, gt=0)  # requests per second (burst: one second's worth)
    tpm: int | None = Field(default=None, gt=0)  # tokens per minute (burst: one minute's worth)


class Project(_Record):
    id: str = Field(pattern=ID_PATTERN)
    name: str = ""
    limits: Limits = Field(default_factory=Limits)
    disabled: bool = False
    created_ms: int = 0
    # Random per creation: a project deleted and created again under the same id is another
    # incarnation, and keys issued to the old one (which name it) never authenticate for it.
    # "" on records written before incarnations existed.
    incarnation: str = ""


class Agent(_Record):
    project_id: str = Field(pattern=ID_PATTERN)
    id: str = Field(pattern=ID_PATTERN)
    name: str = ""
    disabled: bool = False
    created_ms: int = 0

    @property
    def scope_id(self) -> str:
        return agent_scope_id(self.project_id, self.id)


class ApiKey(_Record):
    id: str = Field(pattern=ID_PATTERN)
    project_id: str = Field(pattern=ID_PATTERN)
    agent_id: str = ""
    name: str = ""
    key_hash: str  # sha256 hex of the key; the key itself is never stored
    prefix: str = ""  # the first characters, to tell keys apart in listings
    limits: Limits = Field(default_factory=Limits)
    created_ms: int = 0
    revoked_ms: int = 0
    project_incarnation: str = ""  # the project's incarnation when the key was issued

    @property
    def revoked(self) -> bool:
        return self.revoked_ms > 0

    def public(self) -> dict:
        """What listings show: everything but the hash."""
        out = self.model_dump(mode="json", exclude={"key_hash"})
        out["revoked"] = self.revoked
        return out


class Budget(_Record):
    """A cap in USD on one scope for one period, with alert thresholds in percent."""

    scope: ScopeKind
    scope_id: str  # project id | "<project>/<agent>" | key id
    period: Period
    cap_usd: Decimal = Field(gt=0, max_digits=30, decimal_places=10)
    thresholds: list[int] = Field(default_factory=lambda: list(DEFAULT_THRESHOLDS))
    project_id: str = ""
    updated_ms: int = 0

    @field_validator("thresholds")
    @classmethod
    def _valid_thresholds(cls, value: list[int]) -> list[int]:
        if any(not 1 <= pct <= 1000 for pct in value):
            raise ValueError("thresholds are percentages between 1 and 1000")
        return sorted(set(value))

    @field_validator("scope_id")
    @classmethod
    def _valid_scope_id(cls, value: str) -> str:
        parts = value.split("/")
        if not 1 <= len(parts) <= 2 or not all(re.match(ID_PATTERN, p) for p in parts):
            raise ValueError("scope_id is a project id, <project>/<agent>, or a key id")
        return value

    @property
    def scope_label(self) -> str:
        return scope_label(self.scope, self.scope_id)


def agent_scope_id(project_id: str, agent_id: str) -> str:
    return f"{project_id}/{agent_id}"


def scope_label(kind: str, scope_id: str) -> str:
    """The name of a budget scope in counters, denials and alerts: `project:acme`."""
    return f"{kind}:{scope_id}"


def request_scopes(project_id: str, agent_id: str, key_id: str) -> list[str]:
    """The budget scopes a request counts against."""
    out = [scope_label("project", project_id)]
    if agent_id:
        out.append(scope_label("agent", agent_scope_id(project_id, agent_id)))
    if key_id:
        out.append(scope_label("key", key_id))
    return out


# KV keys: one entry per record. Agent scope ids hold a "/", which KV keys allow.
def project_kv_key(project_id: str) -> str:
    return f"project.{project_id}"


def agent_kv_key(project_id: str, agent_id: str) -> str:
    return f"agent.{project_id}.{agent_id}"


def key_kv_key(key_id: str) -> str:
    return f"key.{key_id}"


def budget_kv_key(scope: str, scope_id: str, period: str) -> str:
    return f"budget.{scope}.{scope_id}.{period}"


# --- API keys -------------------------------------------------------------------------------


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def issue_key(
    project_id: str,
    agent_id: str = "",
    name: str = "",
    limits: Limits | None = None,
    now_ms: int = 0,
    project_incarnation: str = "",
) -> tuple[ApiKey, str]:
    """A new key record and the key itself (to show once; only its hash is kept)."""
    secret = new_secret()
    record = ApiKey(
        id=new_key_id(),
        project_id=project_id,
        agent_id=agent_id,
        name=name,
        key_hash=hash_key(secret),
        prefix=secret[:8],
        limits=limits or Limits(),
        created_ms=now_ms,
        project_incarnation=project_incarnation,
    )
    return record, secret


def new_incarnation() -> str:
    return secrets.token_hex(8)


def new_admin_token() -> str:
    return "sy-admin-" + secrets.token_urlsafe(32)


def dashboard_token(admin_token: str) -> str:
    """The dashboard's read-only login token, derived from the admin token (so every process
    that knows the admin token agrees on it, and rotating one rotates the other)."""
    digest = hmac.new(admin_token.encode(), b"switchyard dashboard login v1", hashlib.sha256).hexdigest()
    return "sy-dash-" + digest[:40]


def same_secret(presented: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(presented.encode(), expected.encode())


def presented_key(authorization: str | None, x_api_key: str | None) -> str:
    """The key a client sent: `Authorization: Bearer <key>` (OpenAI style) or `x-api-key`
    (Anthropic style)."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return (x_api_key or "").strip()


# --- The live view --------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """Who a request is from, attached by the ingress after authentication."""

    project_id: str
    agent_id: str = ""
    key_id: str = ""


ANONYMOUS = Identity(DEFAULT_PROJECT)


class TenancyView:
    """Every tenancy record, indexed for the request path. Fed by `apply(kv_key, value)`."""

    def __init__(self) -> None:
        self.projects: dict[str, Project] = {}
        self.agents: dict[tuple[str, str], Agent] = {}
        self.keys: dict[str, ApiKey] = {}
        self.budgets: dict[str, Budget] = {}
        self._by_hash: dict[str, str] = {}
        self.revision = 0

    def apply(self, kv_key: str, value: bytes | None, revision: int = 0) -> None:
        """Apply one KV entry; `value` None (or empty) means the key was deleted."""
        self.revision = max(self.revision, revision)
        kind, _, rest = kv_key.partition(".")
        if kind == "project":
            self._put(self.projects, rest, value, Project)
        elif kind == "agent":
            project_id, _, agent_id = rest.partition(".")
            self._put(self.agents, (project_id, agent_id), value, Agent)
        elif kind == "key":
            old = self.keys.get(rest)
            if old is not None:
                self._by_hash.pop(old.key_hash, None)
            self._put(self.keys, rest, value, ApiKey)
            new = self.keys.get(rest)
            if new is not None:
                self._by_hash[new.key_hash] = new.id
        elif kind == "budget":
            self._put(self.budgets, rest, value, Budget)

    @staticmethod
    def _put(table: dict, key: object, value: bytes | None, model: type[_Record]) -> None:
        if not value:
            table.pop(key, None)
            return
        try:
            table[key] = model.model_validate_json(value)
        except ValueError:
            table.pop(key, None)  # a malformed record never authorizes anything

    def authenticate(self, secret: str) -> Identity:
        """The identity of a presented key, or GatewayError(unauthorized)."""
        if not secret:
            raise GatewayError(
                ErrorCode.UNAUTHORIZED,
                "missing API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`",
            )
        key_id = self._by_hash.get(hash_key(secret))
        key = self.keys.get(key_id) if key_id else None
        if key is None:
            raise GatewayError(ErrorCode.UNAUTHORIZED, "invalid API key")
        if key.revoked:
            raise GatewayError(ErrorCode.UNAUTHORIZED, "this API key has been revoked")
        project = self.projects.get(key.project_id)
        if project is None or project.disabled:
            raise GatewayError(ErrorCode.UNAUTHORIZED, "the project of this API key is disabled or deleted")
        if key.project_incarnation and key.project_incarnation != project.incarnation:
            raise GatewayError(ErrorCode.UNAUTHORIZED, "the project of this API key was deleted")
        if key.agent_id:
            agent = self.agents.get((key.project_id, key.agent_id))
            if agent is None or agent.disabled:
                raise GatewayError(ErrorCode.UNAUTHORIZED, "the agent of this API key is disabled or deleted")
        return Identity(key.project_id, key.agent_id, key.id)

    def scopes(self, project_id: str, agent_id: str, key_id: str) -> list[str]:
        return request_scopes(project_id, agent_id, key_id)

    def budgets_for(self, scopes: list[str]) -> list[Budget]:
        wanted = set(scopes)
        return [b for b in self.budgets.values() if b.scope_label in wanted]

    def project_limits(self, project_id: str) -> Limits:
        project = self.projects.get(project_id)
        return project.limits if project else Limits()

    def key_limits(self, key_id: str) -> Limits:
        key = self.keys.get(key_id)
        return key.limits if key else Limits()

    def budgets_of_project(self, project_id: str) -> list[Budget]:
        return [b for b in self.budgets.values() if budget_project(b, self) == project_id]


def budget_project(budget: Budget, view: TenancyView) -> str:
    """The project a budget belongs to (keys name theirs in their record)."""
    if budget.project_id:
        return budget.project_id
    if budget.scope == "key":
        key = view.keys.get(budget.scope_id)
        return key.project_id if key else ""
    return budget.scope_id.split("/")[0]
