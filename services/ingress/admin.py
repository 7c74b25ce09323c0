"""The admin HTTP API: projects, agents, API keys and budgets (docs/budgets.md).

Guarded by the admin token (`Authorization: Bearer <SWITCHYARD_ADMIN_TOKEN>`). Records are
written to the tenancy KV bucket, from where every service's watch picks them up; this
process also applies its own writes at once, so a key created here works here immediately.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

import orjson
from nats.aio.client import Client as NATS
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchyard import subjects
from switchyard.bus import NATS_ERRORS
from switchyard.errors import ErrorCode, GatewayError
from switchyard.lifecycle import started
from switchyard.tenancy import (
    ID_PATTERN,
    Agent,
    ApiKey,
    Budget,
    Limits,
    Project,
    TenancyView,
    _Record,
    agent_kv_key,
    budget_kv_key,
    budget_project,
    issue_key,
    key_kv_key,
    new_incarnation,
    presented_key,
    project_kv_key,
    same_secret,
)
from switchyard.tenancy_store import read_record

PREFIX = "/admin/v1"
# An admin route handler, before and after `_guard` wraps it.
Handler = Callable[[Request], Awaitable[Response]]
R = TypeVar("R", bound=_Record)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProjectIn(_Body):
    id: str = Field(pattern=ID_PATTERN)
    name: str = Field("", max_length=200)
    limits: Limits = Field(default_factory=Limits)


class ProjectPatch(_Body):
    name: str | None = Field(None, max_length=200)
    limits: Limits | None = None
    disabled: bool | None = None


class AgentIn(_Body):
    id: str = Field(pattern=ID_PATTERN)
    name: str = Field("", max_length=200)


class AgentPatch(_Body):
    name: str | None = Field(None, max_length=200)
    disabled: bool | None = None


class KeyIn(_Body):
    project: str = Field(pattern=ID_PATTERN)
    agent: str = Field("", pattern=r"^$|" + ID_PATTERN)
    name: str = Field("", max_length=200)
    limits: Limits = Field(default_factory=Limits)


class KeyPatch(_Body):
    name: str | None = Field(None, max_length=200)
    limits: Limits | None = None


class BudgetIn(_Body):
    scope: str
    scope_id: str
    period: str
    cap_usd: Decimal
    thresholds: list[int] | None = None


# What a NATS KV key may be (nats-py checks the same and raises otherwise). Ids from a path or
# query string that cannot form such a key name no record: they answer 404, never a 500.
_KV_KEY = re.compile(r"^[-/_=.a-zA-Z0-9]+$")


def _storable(key: str, what: str) -> str:
    if not _KV_KEY.match(key) or key.startswith(".") or key.endswith("."):
        raise GatewayError(ErrorCode.NOT_FOUND, f"no {what}")
    return key


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def _parse(http: Request, model: type[BaseModel]) -> Any:
    try:
        return model.model_validate_json(await http.body() or b"{}")
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise GatewayError(
            ErrorCode.INVALID_REQUEST, f"{loc}: {err['msg']}" if loc else err["msg"], param=loc
        ) from None


class AdminApi:
    def __init__(self, token: Callable[[], str], view: TenancyView) -> None:
        self._token = token
        self.view = view
        self.kv: KeyValue | None = None
        self.nc: NATS | None = None
        # GET /usage: the ingress's usage reader (services/ingress/usage.py), given by the app.
        self.read_usage: Callable[[str, str], Awaitable[dict[str, Any]]] | None = None

    def bind(self, nc: NATS, kv: KeyValue) -> None:
        self.nc = nc
        self.kv = kv

    @property
    def bus(self) -> NATS:
        """The NATS connection `bind()` gave (NotStartedError before then)."""
        return started(self.nc, "the admin API's bus connection")

    @property
    def records(self) -> KeyValue:
        """The tenancy KV bucket `bind()` gave (NotStartedError before then)."""
        return started(self.kv, "the admin API's KV bucket")

    def routes(self) -> list[Route]:
        g = self._guard
        return [
            Route(f"{PREFIX}/projects", g(self.list_projects), methods=["GET"]),
            Route(f"{PREFIX}/projects", g(self.create_project), methods=["POST"]),
            Route(f"{PREFIX}/projects/{{project}}", g(self.get_project), methods=["GET"]),
            Route(f"{PREFIX}/projects/{{project}}", g(self.update_project), methods=["PATCH"]),
            Route(f"{PREFIX}/projects/{{project}}", g(self.delete_project), methods=["DELETE"]),
            Route(f"{PREFIX}/projects/{{project}}/agents", g(self.list_agents), methods=["GET"]),
            Route(f"{PREFIX}/projects/{{project}}/agents", g(self.create_agent), methods=["POST"]),
            Route(f"{PREFIX}/projects/{{project}}/agents/{{agent}}", g(self.update_agent), methods=["PATCH"]),
            Route(
                f"{PREFIX}/projects/{{project}}/agents/{{agent}}", g(self.delete_agent), methods=["DELETE"]
            ),
            Route(f"{PREFIX}/keys", g(self.list_keys), methods=["GET"]),
            Route(f"{PREFIX}/keys", g(self.create_key), methods=["POST"]),
            Route(f"{PREFIX}/keys/{{key_id}}", g(self.get_key), methods=["GET"]),
            Route(f"{PREFIX}/keys/{{key_id}}", g(self.update_key), methods=["PATCH"]),
            Route(f"{PREFIX}/keys/{{key_id}}", g(self.revoke_key), methods=["DELETE"]),
            Route(f"{PREFIX}/budgets", g(self.list_budgets), methods=["GET"]),
            Route(f"{PREFIX}/budgets", g(self.set_budget), methods=["PUT"]),
            Route(f"{PREFIX}/budgets", g(self.delete_budget), methods=["DELETE"]),
            Route(f"{PREFIX}/spend", g(self.spend), methods=["GET"]),
            Route(f"{PREFIX}/usage", g(self.usage), methods=["GET"]),
        ]

    def _guard(self, handler: Handler) -> Handler:
        async def guarded(http: Request) -> Response:
            presented = presented_key(http.headers.get("authorization"), None)
            if not same_secret(presented, self._token()):
                raise GatewayError(
                    ErrorCode.UNAUTHORIZED, "the admin API needs `Authorization: Bearer <admin token>`"
                )
            if self.kv is None:
                raise GatewayError(ErrorCode.UNAVAILABLE, "the admin API is starting", retry_after_s=1)
            return await handler(http)

        return guarded

    # --- storage helpers ------------------------------------------------------------------

    async def _create(self, key: str, record: _Record) -> None:
        try:
            revision = await self.records.create(key, record.to_bytes())
        except KeyWrongLastSequenceError:
            raise GatewayError(ErrorCode.CONFLICT, f"{key.replace('.', ' ', 1)} already exists") from None
        self.view.apply(key, record.to_bytes(), revision)

    async def _update(self, key: str, model: type[R], change: Callable[[R], R], what: str) -> R:
        """Read-modify-write with compare-and-set on the KV revision (retried on a race)."""
        _storable(key, what)
        for _ in range(5):
            found = await read_record(self.records, key)
            if found is None:
                raise GatewayError(ErrorCode.NOT_FOUND, f"no {what}")
            value, revision = found
            record = change(model.model_validate_json(value))
            try:
                new_revision = await self.records.update(key, record.to_bytes(), last=revision)
            except KeyWrongLastSequenceError:
                continue
            self.view.apply(key, record.to_bytes(), new_revision)
            return record
        raise GatewayError(ErrorCode.CONFLICT, f"{what} is being changed concurrently; try again")

    async def _delete(self, key: str, what: str) -> None:
        if await read_record(self.records, _storable(key, what)) is None:
            raise GatewayError(ErrorCode.NOT_FOUND, f"no {what}")
        await self.records.delete(key)
        self.view.apply(key, None)

    async def _forget(self, key: str) -> None:
        """Delete a record that may already be gone (a repeated cascade)."""
        if await read_record(self.records, key) is not None:
            await self.records.delete(key)
        self.view.apply(key, None)

    def _project(self, project_id: str) -> Project:
        project = self.view.projects.get(project_id)
        if project is None:
            raise GatewayError(ErrorCode.NOT_FOUND, f"no project {project_id!r}")
        return project

    # --- projects -----------------------------------------------------------------------

    async def list_projects(self, http: Request) -> Response:
        return _json(
            {
                "data": [
                    p.model_dump(mode="json") for p in sorted(self.view.projects.values(), key=lambda p: p.id)
                ]
            }
        )

    async def create_project(self, http: Request) -> Response:
        body: ProjectIn = await _parse(http, ProjectIn)
        project = Project(
            id=body.id,
            name=body.name,
            limits=body.limits,
            created_ms=_now_ms(),
            incarnation=new_incarnation(),
        )
        await self._create(project_kv_key(project.id), project)
        return _json(project.model_dump(mode="json"), 201)

    async def get_project(self, http: Request) -> Response:
        return _json(self._project(http.path_params["project"]).model_dump(mode="json"))

    async def update_project(self, http: Request) -> Response:
        body: ProjectPatch = await _parse(http, ProjectPatch)
        changes = body.model_dump(exclude_none=True)
        project_id = http.path_params["project"]
        record = await self._update(
            project_kv_key(project_id),
            Project,
            lambda p: p.model_copy(update=changes),
            f"project {project_id!r}",
        )
        return _json(record.model_dump(mode="json"))

    async def delete_project(self, http: Request) -> Response:
        """Deletes the project with everything that grants or caps its use: its keys are
        revoked (they stay listed, as revoked), its agents and budgets deleted. Keys go first,
        the project record last, so an interrupted delete can be repeated and never leaves a
        working key behind. A project created again under the id starts with none of them (and
        its new incarnation would refuse the old keys even if one were missed)."""
        project_id = http.path_params["project"]
        key = _storable(project_kv_key(project_id), f"project {project_id!r}")
        if await read_record(self.records, key) is None:
            raise GatewayError(ErrorCode.NOT_FOUND, f"no project {project_id!r}")
        now = _now_ms()
        keys = [k.id for k in self.view.keys.values() if k.project_id == project_id and not k.revoked]
        for key_id in keys:
            await self._update(
                key_kv_key(key_id),
                ApiKey,
                lambda k: k if k.revoked else k.model_copy(update={"revoked_ms": now}),
                f"key {key_id!r}",
            )
        budgets = self.view.budgets_of_project(project_id)
        for budget in budgets:
            await self._forget(budget_kv_key(budget.scope, budget.scope_id, budget.period))
        agents = [a for (p, a) in self.view.agents if p == project_id]
        for agent_id in agents:
            await self._forget(agent_kv_key(project_id, agent_id))
        await self._delete(key, f"project {project_id!r}")
        return _json(
            {
                "deleted": project_id,
                "revoked_keys": len(keys),
                "deleted_budgets": len(budgets),
                "deleted_agents": len(agents),
            }
        )

    # --- agents -------------------------------------------------------------------------

    async def list_agents(self, http: Request) -> Response:
        project_id = self._project(http.path_params["project"]).id
        agents = [a for (p, _), a in sorted(self.view.agents.items()) if p == project_id]
        return _json({"data": [a.model_dump(mode="json") for a in agents]})

    async def create_agent(self, http: Request) -> Response:
        project_id = self._project(http.path_params["project"]).id
        body: AgentIn = await _parse(http, AgentIn)
        agent = Agent(project_id=project_id, id=body.id, name=body.name, created_ms=_now_ms())
        await self._create(agent_kv_key(project_id, agent.id), agent)
        return _json(agent.model_dump(mode="json"), 201)

    async def update_agent(self, http: Request) -> Response:
        body: AgentPatch = await _parse(http, AgentPatch)
        changes = body.model_dump(exclude_none=True)
        p, a = http.path_params["project"], http.path_params["agent"]
        record = await self._update(
            agent_kv_key(p, a), Agent, lambda x: x.model_copy(update=changes), f"agent {p}/{a}"
        )
        return _json(record.model_dump(mode="json"))

    async def delete_agent(self, http: Request) -> Response:
        p, a = http.path_params["project"], http.path_params["agent"]
        await self._delete(agent_kv_key(p, a), f"agent {p}/{a}")
        return _json({"deleted": f"{p}/{a}"})

    # --- keys ---------------------------------------------------------------------------

    async def list_keys(self, http: Request) -> Response:
        project_id = http.query_params.get("project", "")
        keys = sorted(self.view.keys.values(), key=lambda k: (k.project_id, k.created_ms, k.id))
        return _json({"data": [k.public() for k in keys if not project_id or k.project_id == project_id]})

    async def create_key(self, http: Request) -> Response:
        body: KeyIn = await _parse(http, KeyIn)
        if body.agent and (body.project, body.agent) not in self.view.agents:
            raise GatewayError(ErrorCode.NOT_FOUND, f"no agent {body.project}/{body.agent}")
        project = self._project(body.project)
        record, secret = issue_key(
            body.project,
            body.agent,
            body.name,
            body.limits,
            _now_ms(),
            project_incarnation=project.incarnation,
        )
        await self._create(key_kv_key(record.id), record)
        out = record.public()
        out["key"] = secret
        out["note"] = "store this key now: it is not shown again"
        return _json(out, 201)

    def _key(self, key_id: str) -> ApiKey:
        key = self.view.keys.get(key_id)
        if key is None:
            raise GatewayError(ErrorCode.NOT_FOUND, f"no key {key_id!r}")
        return key

    async def get_key(self, http: Request) -> Response:
        return _json(self._key(http.path_params["key_id"]).public())

    async def update_key(self, http: Request) -> Response:
        body: KeyPatch = await _parse(http, KeyPatch)
        changes = body.model_dump(exclude_none=True)
        key_id = http.path_params["key_id"]
        record = await self._update(
            key_kv_key(key_id), ApiKey, lambda k: k.model_copy(update=changes), f"key {key_id!r}"
        )
        return _json(record.public())

    async def revoke_key(self, http: Request) -> Response:
        """Revoked keys stay listed (who had access, and when it ended) but never authenticate."""
        key_id = http.path_params["key_id"]
        now = _now_ms()
        record = await self._update(
            key_kv_key(key_id),
            ApiKey,
            lambda k: k if k.revoked else k.model_copy(update={"revoked_ms": now}),
            f"key {key_id!r}",
        )
        return _json(record.public())

    # --- budgets ------------------------------------------------------------------------

    def _budget_project(self, scope: str, scope_id: str) -> str:
        """The project of a budget's scope, which must exist."""
        if scope == "project":
            return self._project(scope_id).id
        if scope == "agent":
            project_id, _, agent_id = scope_id.partition("/")
            if (project_id, agent_id) not in self.view.agents:
                raise GatewayError(
                    ErrorCode.NOT_FOUND, f"no agent {scope_id!r} (write it as <project>/<agent>)"
                )
            return project_id
        if scope == "key":
            return self._key(scope_id).project_id
        raise GatewayError(ErrorCode.INVALID_REQUEST, "scope: one of project, agent, key", param="scope")

    async def list_budgets(self, http: Request) -> Response:
        project_id = http.query_params.get("project", "")
        budgets = [
            b.model_dump(mode="json")
            for b in sorted(self.view.budgets.values(), key=lambda b: (b.scope, b.scope_id, b.period))
            if not project_id or budget_project(b, self.view) == project_id
        ]
        return _json({"data": budgets})

    async def set_budget(self, http: Request) -> Response:
        body: BudgetIn = await _parse(http, BudgetIn)
        project_id = self._budget_project(body.scope, body.scope_id)
        try:
            # Validated here (scope and period are plain strings in BudgetIn) for one message shape.
            budget = Budget.model_validate(
                dict(
                    scope=body.scope,
                    scope_id=body.scope_id,
                    period=body.period,
                    cap_usd=body.cap_usd,
                    project_id=project_id,
                    updated_ms=_now_ms(),
                    **({"thresholds": body.thresholds} if body.thresholds is not None else {}),
                )
            )
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise GatewayError(ErrorCode.INVALID_REQUEST, f"{loc}: {err['msg']}", param=loc) from None
        key = budget_kv_key(budget.scope, budget.scope_id, budget.period)
        revision = await self.records.put(key, budget.to_bytes())
        self.view.apply(key, budget.to_bytes(), revision)
        return _json(budget.model_dump(mode="json"))

    async def delete_budget(self, http: Request) -> Response:
        q = http.query_params
        scope, scope_id, period = q.get("scope", ""), q.get("scope_id", ""), q.get("period", "")
        await self._delete(budget_kv_key(scope, scope_id, period), f"{period} budget on {scope}:{scope_id}")
        return _json({"deleted": f"{scope}:{scope_id}:{period}"})

    async def usage(self, http: Request) -> Response:
        """Any project's usage report, as its own keys read it on GET /v1/usage."""
        project_id = http.query_params.get("project", "")
        if not project_id:
            raise GatewayError(ErrorCode.INVALID_REQUEST, "project is required", param="project")
        self._project(project_id)  # 404 for an unknown project
        if self.read_usage is None:
            raise GatewayError(ErrorCode.UNAVAILABLE, "the admin API is starting", retry_after_s=1)
        return _json(await self.read_usage(project_id, http.query_params.get("period", "month")))

    async def spend(self, http: Request) -> Response:
        """Spend against caps, as the budget authority counts it right now."""
        project_id = http.query_params.get("project", "")
        try:
            reply = await self.bus.request(
                subjects.BUDGET_STATUS, orjson.dumps({"project": project_id}), timeout=5
            )
        except NATS_ERRORS:
            raise GatewayError(
                ErrorCode.UNAVAILABLE, "the budget authority did not answer", retry_after_s=1
            ) from None
        body = orjson.loads(reply.data)
        if "error" in body:
            raise GatewayError(ErrorCode.UNAVAILABLE, body["error"], retry_after_s=1)
        return _json(body)
