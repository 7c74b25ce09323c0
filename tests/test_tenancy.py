"""Tenancy records, API keys and authentication: pure, no I/O."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from switchyard.errors import GatewayError
from switchyard.tenancy import (
    Agent,
    Budget,
    Project,
    TenancyView,
    agent_kv_key,
    budget_kv_key,
    dashboard_token,
    hash_key,
    issue_key,
    key_kv_key,
    new_incarnation,
    presented_key,
    project_kv_key,
)


def _view_with_key(agent: str = "") -> tuple[TenancyView, str, str]:
    view = TenancyView()
    view.apply(project_kv_key("acme"), Project(id="acme").to_bytes())
    if agent:
        view.apply(agent_kv_key("acme", agent), Agent(project_id="acme", id=agent).to_bytes())
    record, secret = issue_key("acme", agent_id=agent)
    view.apply(key_kv_key(record.id), record.to_bytes())
    return view, record.id, secret


def test_a_key_is_high_entropy_shown_once_and_stored_as_its_hash() -> None:
    record, secret = issue_key("acme", name="ci")
    other, other_secret = issue_key("acme")
    assert secret.startswith("sy-") and len(secret) >= 40
    assert secret != other_secret and record.id != other.id
    assert record.key_hash == hash_key(secret) and len(record.key_hash) == 64
    stored = record.to_bytes().decode()
    assert secret not in stored and secret[8:] not in stored
    assert "key_hash" not in record.public()


@pytest.mark.parametrize(
    ("authorization", "x_api_key", "expected"),
    [
        ("Bearer sy-abc", None, "sy-abc"),
        ("bearer   sy-abc  ", None, "sy-abc"),
        (None, "sy-xyz", "sy-xyz"),
        ("Basic Zm9vOmJhcg==", "sy-xyz", "sy-xyz"),
        ("Bearer ", None, ""),
        (None, None, ""),
    ],
)
def test_presented_key_reads_bearer_or_x_api_key(authorization, x_api_key, expected) -> None:
    assert presented_key(authorization, x_api_key) == expected


def test_authenticate_attaches_project_agent_and_key() -> None:
    view, key_id, secret = _view_with_key(agent="bot")
    identity = view.authenticate(secret)
    assert (identity.project_id, identity.agent_id, identity.key_id) == ("acme", "bot", key_id)
    assert view.scopes(identity.project_id, identity.agent_id, identity.key_id) == [
        "project:acme",
        "agent:acme/bot",
        f"key:{key_id}",
    ]


@pytest.mark.parametrize(
    "case", ["missing", "unknown", "revoked", "project_disabled", "project_deleted", "agent_deleted"]
)
def test_authenticate_refuses_with_401(case: str) -> None:
    view, key_id, secret = _view_with_key(agent="bot")
    presented = secret
    if case == "missing":
        presented = ""
    elif case == "unknown":
        presented = secret[:-2] + "xx"
    elif case == "revoked":
        record = view.keys[key_id].model_copy(update={"revoked_ms": 1})
        view.apply(key_kv_key(key_id), record.to_bytes())
    elif case == "project_disabled":
        view.apply(project_kv_key("acme"), Project(id="acme", disabled=True).to_bytes())
    elif case == "project_deleted":
        view.apply(project_kv_key("acme"), None)
    elif case == "agent_deleted":
        view.apply(agent_kv_key("acme", "bot"), None)
    with pytest.raises(GatewayError) as err:
        view.authenticate(presented)
    assert err.value.code == "unauthorized" and err.value.http_status == 401


def test_a_replaced_key_record_drops_its_old_hash() -> None:
    view, key_id, secret = _view_with_key()
    view.apply(key_kv_key(key_id), None)
    with pytest.raises(GatewayError):
        view.authenticate(secret)
    view.apply(key_kv_key(key_id), b"{not json")  # a malformed record authorizes nothing
    with pytest.raises(GatewayError):
        view.authenticate(secret)


def test_budgets_validate_and_index_by_scope() -> None:
    view = TenancyView()
    budget = Budget(scope="agent", scope_id="acme/bot", period="day", cap_usd=Decimal("2.5"))
    assert budget.thresholds == [50, 80, 100]
    view.apply(budget_kv_key("agent", "acme/bot", "day"), budget.to_bytes())
    assert view.budgets_for(["project:acme", "agent:acme/bot"]) == [budget]
    assert view.budgets_for(["project:acme"]) == []
    with pytest.raises(ValidationError):
        Budget(scope="project", scope_id="acme", period="week", cap_usd=Decimal(1))
    with pytest.raises(ValidationError):
        Budget(scope="project", scope_id="acme", period="day", cap_usd=Decimal(-1))
    with pytest.raises(ValidationError):
        Budget(scope="project", scope_id="a b", period="day", cap_usd=Decimal(1))
    with pytest.raises(ValidationError):
        Budget(scope="project", scope_id="acme", period="day", cap_usd=Decimal(1), thresholds=[0])


def test_a_key_of_a_deleted_project_does_not_work_for_a_new_project_with_its_id() -> None:
    view = TenancyView()
    first = Project(id="acme", incarnation=new_incarnation())
    view.apply(project_kv_key("acme"), first.to_bytes())
    record, secret = issue_key("acme", project_incarnation=first.incarnation)
    view.apply(key_kv_key(record.id), record.to_bytes())
    assert view.authenticate(secret).key_id == record.id
    view.apply(project_kv_key("acme"), None)  # deleted (the admin API also revokes the key) ...
    view.apply(project_kv_key("acme"), Project(id="acme", incarnation=new_incarnation()).to_bytes())
    with pytest.raises(GatewayError) as err:  # ... and created again: the old key stays dead
        view.authenticate(secret)
    assert err.value.code == "unauthorized" and "deleted" in err.value.message
    # Records from before incarnations (both empty) keep working.
    legacy_key, legacy_secret = issue_key("old")
    view.apply(project_kv_key("old"), Project(id="old").to_bytes())
    view.apply(key_kv_key(legacy_key.id), legacy_key.to_bytes())
    assert view.authenticate(legacy_secret).project_id == "old"


def test_the_dashboard_token_is_derived_from_the_admin_token_and_is_not_it() -> None:
    token = dashboard_token("sy-admin-abc")
    assert token == dashboard_token("sy-admin-abc") and token.startswith("sy-dash-")
    assert token != dashboard_token("sy-admin-abd") and "sy-admin-abc" not in token
