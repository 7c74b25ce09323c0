"""Tenant isolation and no SSRF, through a real stack (docs/reliability.md, "Isolation" and
"Backpressure and edge limits").

Isolation: a key of one project never reads another project's data or spend. The one read
path of the public API, GET /v1/requests/{id}, answers another project's request exactly as
an unknown one (404); every admin route (spend included) refuses project keys.

No SSRF: upstream URLs come only from the catalog. Request bodies and headers that try to
name an upstream (`base_url`, `api_base`, a model that is a URL, a routing header that is a
URL) are refused or ignored, and a listener on the named port receives nothing.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
from starlette.routing import Route

from services.ingress.admin import AdminApi
from switchyard.tenancy import TenancyView
from switchyard.testing.stack import Stack, wait_for_rows

HELLO = {"model": "auto", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def tenants(stack: Stack) -> dict[str, str]:
    return {"alpha": stack.provision("alpha"), "beta": stack.provision("beta")}


async def _completed_request(stack: Stack, key: str) -> str:
    async with httpx.AsyncClient(base_url=stack.ingress_url, timeout=30) as http:
        r = await http.post("/llm.invoke", json=HELLO, headers=bearer(key))
    assert r.status_code == 200, r.text
    request_id = r.json()["request_id"]
    await wait_for_rows(
        stack.nats.url, "SELECT 1 FROM requests FINAL WHERE request_id = {id:String}", 1, {"id": request_id}
    )
    return request_id


# --- isolation ----------------------------------------------------------------------------


async def test_a_request_is_readable_only_by_its_own_project(stack: Stack, tenants: dict[str, str]) -> None:
    request_id = await _completed_request(stack, tenants["alpha"])
    async with httpx.AsyncClient(base_url=stack.ingress_url, timeout=10) as http:
        own = await http.get(f"/v1/requests/{request_id}", headers=bearer(tenants["alpha"]))
        other = await http.get(f"/v1/requests/{request_id}", headers=bearer(tenants["beta"]))
        other_by_x_api_key = await http.get(
            f"/v1/requests/{request_id}", headers={"x-api-key": tenants["beta"]}
        )
        unknown = await http.get("/v1/requests/req_unknown", headers=bearer(tenants["beta"]))
        anonymous = await http.get(f"/v1/requests/{request_id}")

    assert own.status_code == 200
    assert own.json()["project_id"] == "alpha"
    # Another project's request is indistinguishable from an unknown one.
    for r in (other, other_by_x_api_key):
        assert r.status_code == 404, r.text
        assert r.json()["error"]["code"] == unknown.json()["error"]["code"] == "not_found"
        assert "alpha" not in r.text and "cost" not in r.text
    assert unknown.status_code == 404
    assert anonymous.status_code == 401


def _admin_calls(project: str) -> list[tuple[str, str]]:
    """Every admin route (method, concrete path), taken from the app's own route table."""
    calls = []
    for route in AdminApi(lambda: "", TenancyView()).routes():
        assert isinstance(route, Route)
        path = route.path.replace("{project}", project).replace("{agent}", "bot").replace("{key_id}", "key_x")
        calls.extend((method, path) for method in sorted(route.methods or ()) if method != "HEAD")
    return calls


async def test_admin_routes_refuse_project_keys(stack: Stack, tenants: dict[str, str]) -> None:
    calls = _admin_calls("alpha")
    assert ("GET", "/admin/v1/spend") in calls and len(calls) >= 15
    body = {"id": "intruder", "project": "alpha", "scope": "project", "scope_id": "alpha"}
    async with httpx.AsyncClient(base_url=stack.ingress_url, timeout=10) as http:
        for method, path in calls:
            for headers in (bearer(tenants["alpha"]), {"x-api-key": tenants["alpha"]}, {}):
                kwargs = {"json": body} if method in ("POST", "PUT", "PATCH") else {}
                r = await http.request(method, path, headers=headers, params={"project": "alpha"}, **kwargs)
                assert r.status_code == 401, (method, path, r.status_code, r.text)
                assert r.json()["error"]["code"] == "unauthorized"
    # Nothing was created or changed by those calls.
    assert stack.admin("GET", "/projects/intruder").status_code == 404
    keys = stack.admin("GET", "/keys", params={"project": "alpha"}).json()["data"]
    assert len(keys) == 1


async def test_spend_is_only_visible_to_the_admin(stack: Stack, tenants: dict[str, str]) -> None:
    await _completed_request(stack, tenants["beta"])
    async with httpx.AsyncClient(base_url=stack.ingress_url, timeout=10) as http:
        r = await http.get("/admin/v1/spend", params={"project": "beta"}, headers=bearer(tenants["alpha"]))
    assert r.status_code == 401
    assert "spent" not in r.text
    assert stack.admin("GET", "/spend", params={"project": "beta"}).status_code == 200


# --- no SSRF ------------------------------------------------------------------------------


class Listener:
    """A TCP listener on loopback that counts every connection made to it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


def _attempts(url: str, key: str) -> list[tuple[str, dict, dict]]:
    """(path, body, extra headers) that each try to point the gateway at `url`."""
    msgs = [{"role": "user", "content": "hello"}]
    smuggled = {"base_url": url, "api_base": url, "api_key": "sk-attacker", "upstream_url": url}
    return [
        # Fields the native API does not know: refused.
        *[("/llm.invoke", dict(HELLO, **{name: value}), {}) for name, value in smuggled.items()],
        # A model or route named like a URL: no such model.
        ("/llm.invoke", dict(HELLO, model=url), {}),
        ("/llm.invoke", dict(HELLO, model=f"openai/{url}"), {}),
        ("/llm.invoke", HELLO, {"x-switchyard-route": url}),
        # Headers that might look like an upstream override: ignored (served by the catalog).
        ("/llm.invoke", HELLO, {"x-switchyard-upstream": url, "x-switchyard-base-url": url}),
        ("/llm.invoke", HELLO, {"x-forwarded-host": url, "x-switchyard-metadata-base_url": url}),
        # Metadata is recorded, never followed.
        ("/llm.invoke", dict(HELLO, metadata={"base_url": url, "api_base": url}), {}),
        # The compatible APIs ignore unknown fields, as their providers do.
        ("/v1/chat/completions", {"model": "auto", "messages": msgs, "max_tokens": 8, **smuggled}, {}),
        ("/v1/chat/completions", {"model": url, "messages": msgs, "max_tokens": 8}, {}),
        ("/v1/messages", {"model": "auto", "messages": msgs, "max_tokens": 8, **smuggled}, {}),
        (
            "/v1/messages",
            {"model": url, "messages": msgs, "max_tokens": 8},
            {"anthropic-version": "2023-06-01"},
        ),
        # A URL as the path of the request lookup.
        (f"/v1/requests/{url}", {}, {}),
    ]


async def test_no_client_supplied_upstream_is_ever_contacted(
    stack: Stack, tenants: dict[str, str], listener: Listener
) -> None:
    url = f"http://127.0.0.1:{listener.port}/v1"
    key = tenants["alpha"]
    statuses = []
    async with httpx.AsyncClient(base_url=stack.ingress_url, timeout=30) as http:
        for path, body, headers in _attempts(url, key):
            if path.startswith("/v1/requests/"):
                r = await http.get(path, headers=bearer(key))
            else:
                r = await http.post(path, json=body, headers={**bearer(key), **headers})
            statuses.append((path, r.status_code))
            # Refused (400 unknown field, 404 no such model) or served from the catalog (200).
            assert r.status_code in (200, 400, 404), (path, body, headers, r.status_code, r.text)
            if r.status_code == 200:
                assert "provider" not in r.json() or r.json()["provider"] == "demo"
            assert "Traceback" not in r.text
    assert listener.connections == 0, statuses
    # The native API's unknown fields are refused, not silently dropped.
    assert statuses[:4] == [("/llm.invoke", 400)] * 4
