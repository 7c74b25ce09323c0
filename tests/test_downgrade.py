"""Budget-aware downgrade: the route policy, the budget pressure the leader publishes, when a
request is downgraded, its cheaper chain, the rationale and the saving the ledger records. Pure."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.budget.authority import Authority
from services.budget.book import SpendBook
from services.budget.periods import period_start
from services.budget.pressure import pressure
from services.ledger.rows import REQUEST_COLUMNS, request_row
from services.router import downgrade
from services.router.ranking import CandidateState, rank
from services.router.strategy import preset
from switchyard.catalog import build_catalog
from switchyard.config import ConfigError
from switchyard.downgrades import saved_usd
from switchyard.tenancy import Budget, Project, TenancyView, budget_kv_key, project_kv_key
from switchyard.v1 import events_pb2, invoke_pb2

CONFIG = {
    "routes": {
        "thrifty": {
            "deployments": ["demo/smart", "demo/fast"],
            "strategy": "best",
            "downgrade": {"at_pct": 80},
        }
    }
}
NOW_MS = 1_795_000_000_000


def catalog():  # type: ignore[no-untyped-def]
    return build_catalog(CONFIG, {})


def test_a_route_declares_its_downgrade_policy() -> None:
    route = catalog().route("thrifty")
    assert route is not None and route.downgrade is not None
    assert (route.downgrade.at_pct, route.downgrade.strategy) == (80, "cheapest")
    with pytest.raises((ConfigError, ValueError)):
        build_catalog({"routes": {"x": {"deployments": ["demo/fast"], "downgrade": {"at_pct": 120}}}}, {})
    with pytest.raises((ConfigError, ValueError)):
        build_catalog(
            {"routes": {"x": {"deployments": ["demo/fast"], "downgrade": {"strategy": "free"}}}}, {}
        )


def test_the_leader_publishes_each_scopes_fullest_cap() -> None:
    view = TenancyView()
    view.apply(project_kv_key("acme"), Project(id="acme").to_bytes())
    for period, cap in (("day", "10"), ("month", "100")):
        budget = Budget(
            scope="project", scope_id="acme", period=period, cap_usd=Decimal(cap), project_id="acme"
        )
        view.apply(budget_kv_key("project", "acme", period), budget.to_bytes())
    authority = Authority(view, SpendBook())
    for period in ("day", "month"):
        slot = ("project:acme", period, period_start(period, NOW_MS))
        authority.book.add_spent(slot, Decimal(7))
        authority.book.counters[slot].held = Decimal(1)
    body = pressure(authority, NOW_MS)
    assert body["scopes"] == {"project:acme": {"used_pct": 80.0, "period": "day", "cap_usd": "10"}}


def _request(agent: str = "") -> invoke_pb2.InvokeRequest:
    return invoke_pb2.InvokeRequest(project_id="acme", agent_id=agent, key_id="key_1")


def test_a_request_is_downgraded_when_one_of_its_scopes_is_past_the_threshold() -> None:
    route = catalog().route("thrifty")
    view = downgrade.PressureView()
    assert view.triggered(route, _request(), 0.0) is None  # no reading yet
    view.update({"scopes": {"project:acme": {"used_pct": 79.9, "period": "day"}}}, 10.0)
    assert view.triggered(route, _request(), 10.0) is None
    view.update(
        {
            "scopes": {
                "project:acme": {"used_pct": 81, "period": "day"},
                "key:key_1": {"used_pct": 95, "period": "total"},
            }
        },
        11.0,
    )
    trigger = view.triggered(route, _request(), 11.0)
    assert trigger is not None and (trigger.scope, trigger.used_pct) == ("key:key_1", 95.0)  # the fullest
    assert trigger.text() == (
        "route thrifty downgrades to cheapest at 80 % of a cap: key:key_1 has 95.0 % of its total cap spent or held"
    )
    assert view.triggered(route, _request(), 11.0 + downgrade.STALE_S + 1) is None  # an old reading
    assert view.triggered(catalog().route("auto"), _request(), 11.0) is None  # no policy on the route
    view.update({"scopes": "garbage"}, 12.0)  # ignored, the last good reading stays
    assert view.triggered(route, _request(), 12.0) is not None


def _ranked(weights_name: str):  # type: ignore[no-untyped-def]
    cat = catalog()
    candidates = [cat.deployments["demo/smart"], cat.deployments["demo/fast"]]
    states = {d.id: CandidateState() for d in candidates}
    return rank("thrifty", candidates, states, preset(weights_name), strategy=weights_name,
                prompt_tokens=10, expected_output=24)  # fmt: skip


def test_the_downgraded_chain_holds_only_cheaper_deployments_and_the_rationale_says_why() -> None:
    undowngraded, cheap = _ranked("best"), _ranked("cheapest")
    assert undowngraded.chain[0].id == "demo/smart" and cheap.chain[0].id == "demo/fast"
    downgraded = downgrade.cheaper(cheap, undowngraded)
    assert downgraded is not None and [d.id for d in downgraded.chain] == ["demo/fast"]
    assert list(downgraded.rationale.chain) == ["demo/fast"]
    trigger = downgrade.Trigger("thrifty", 80, "cheapest", "project:acme", 83.5, "day")
    downgrade.note(downgraded.rationale, trigger, undowngraded.rationale)
    assert downgraded.rationale.downgrade == trigger.text()
    assert downgraded.rationale.undowngraded_winner == "demo/smart"
    assert downgraded.rationale.undowngraded_est_cost_usd > 0
    assert trigger.text() in downgraded.rationale.reason
    # Nothing cheaper than the undowngraded winner: no downgrade.
    assert downgrade.cheaper(_ranked("cheapest"), _ranked("cheapest")) is None


def test_the_ledger_records_the_saving_against_the_undowngraded_choice() -> None:
    undowngraded, cheap = _ranked("best"), _ranked("cheapest")
    downgraded = downgrade.cheaper(cheap, undowngraded)
    assert downgraded is not None
    downgrade.note(downgraded.rationale, downgrade.Trigger("thrifty", 80, "cheapest", "project:acme", 81, "day"),
                   undowngraded.rationale)  # fmt: skip
    # demo/smart costs 25x demo/fast for the same tokens: a bill of 0.001 saved 0.024.
    assert saved_usd(downgraded.rationale, "demo/fast", Decimal("0.001")) == Decimal("0.024")
    assert saved_usd(undowngraded.rationale, "demo/smart", Decimal("0.001")) == 0  # not downgraded
    assert saved_usd(downgraded.rationale, "demo/fast", Decimal(0)) == 0  # nothing billed
    event = events_pb2.Completion(request_id="r1", deployment_id="demo/fast", cost_usd="0.001")
    event.rationale.CopyFrom(downgraded.rationale)
    row = dict(zip(REQUEST_COLUMNS, request_row(event), strict=True))
    assert row["downgrade_saved_usd"] == Decimal("0.024")
