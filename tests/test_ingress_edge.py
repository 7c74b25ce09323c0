"""Pure parts of the ingress edge shared by every API: routing hints, the API key, error headers
and the gRPC request check and status mapping; and the errors the HTTP edge answers itself
(body too large, load shed, no key, wrong method) in each API's dialect, through the real app
without a bus."""

from __future__ import annotations

import grpc
import httpx
import pytest

from services.ingress import anthropic_api, grpc_api, hints, native, openai_api
from services.ingress.app import Ingress
from services.ingress.dialects import ANTHROPIC, HTTP_APIS, NATIVE, OPENAI, dialect_for_path, error_headers
from switchyard.errors import GatewayError
from switchyard.settings import Settings
from switchyard.tenancy import presented_key
from switchyard.v1 import invoke_pb2


@pytest.mark.parametrize("preset", ["balanced", "fastest", "cheapest", "best"])
def test_strategy_presets(preset: str) -> None:
    assert hints.parse_strategy(preset) == hints.Strategy(preset=preset)


def test_strategy_weights() -> None:
    assert hints.parse_strategy(" latency=0.5, cost=0.25 ") == hints.Strategy(latency=0.5, cost=0.25)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("speed=1", "must be one of"),
        ("latency", "must be one of"),
        ("latency=fast", "must be a number"),
        ("latency=-1", "must be a number"),
        ("latency=nan", "must be a number"),
        ("latency=0,cost=0", "must not all be zero"),
    ],
)
def test_bad_strategies_are_invalid_requests(text: str, needle: str) -> None:
    with pytest.raises(GatewayError) as caught:
        hints.parse_strategy(text)
    assert caught.value.code == "invalid_request"
    assert caught.value.param == hints.STRATEGY_HEADER
    assert needle in caught.value.message


def test_hints_from_headers_and_applied_over_the_body() -> None:
    found = hints.hints_from_headers(
        {
            "x-switchyard-route": " fast ",
            "x-switchyard-strategy": "quality=1",
            "x-switchyard-metadata-agent": "billing-bot",
            "x-switchyard-metadata-task": "classification",
            "x-switchyard-metadata-": "ignored: no key",
            "x-other": "ignored",
        }
    )
    assert found.route == "fast"
    assert found.metadata == {"agent": "billing-bot", "task": "classification"}
    request = invoke_pb2.InvokeRequest(model="gpt-4o")
    request.strategy.preset = "cheapest"
    request.metadata["agent"] = "from-body"
    request.metadata["user"] = "u-1"
    hints.apply_hints(request, found)
    assert request.model == "fast"
    assert request.strategy.explicit and request.strategy.quality == 1 and not request.strategy.preset
    assert dict(request.metadata) == {"agent": "billing-bot", "task": "classification", "user": "u-1"}


def test_no_hints_change_nothing() -> None:
    request = invoke_pb2.InvokeRequest(model="auto")
    request.strategy.preset = "best"
    hints.apply_hints(request, hints.hints_from_headers({}))
    assert request.model == "auto" and request.strategy.preset == "best"


def test_too_many_or_too_long_metadata_headers() -> None:
    with pytest.raises(GatewayError):
        hints.hints_from_headers(
            {f"x-switchyard-metadata-k{i}": "v" for i in range(hints.MAX_METADATA_ENTRIES + 1)}
        )
    with pytest.raises(GatewayError):
        hints.hints_from_headers({"x-switchyard-metadata-k": "v" * (hints.MAX_METADATA_VALUE + 1)})


@pytest.mark.parametrize(
    ("metadata", "param"),
    [
        ({f"k{i}": "v" for i in range(hints.MAX_METADATA_ENTRIES + 1)}, "metadata"),
        ({"k": "v" * (hints.MAX_METADATA_VALUE + 1)}, "metadata.k"),
        ({"k" * (hints.MAX_METADATA_KEY + 1): "v"}, "metadata"),
        ({"": "v"}, "metadata"),
    ],
)
def test_request_metadata_has_one_bound_whatever_it_came_from(metadata: dict, param: str) -> None:
    with pytest.raises(GatewayError) as err:
        hints.check_metadata(metadata)
    assert err.value.code == "invalid_request" and err.value.param == param
    hints.check_metadata({f"k{i}": "v" * hints.MAX_METADATA_VALUE for i in range(hints.MAX_METADATA_ENTRIES)})


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ({"authorization": "Bearer sk-live-1"}, "sk-live-1"),
        ({"authorization": "bearer   sk-live-2  "}, "sk-live-2"),
        ({"x-api-key": "sk-ant-3"}, "sk-ant-3"),
        ({"authorization": "Bearer sk-4", "x-api-key": "sk-ant-4"}, "sk-4"),
        ({"authorization": "Basic dXNlcjpwYXNz", "x-api-key": "sk-5"}, "sk-5"),
        ({"authorization": "Bearer "}, ""),
        ({}, ""),
    ],
)
def test_api_key_from_any_sdks_header(headers: dict, key: str) -> None:
    def api_key_from(headers: dict) -> str:  # how auth.py reads the key, HTTP and gRPC alike
        return presented_key(headers.get("authorization"), headers.get("x-api-key"))

    assert api_key_from(headers) == key


def test_grpc_metadata_reads_like_headers() -> None:
    metadata = (("Authorization", "Bearer sk-g"), ("x-switchyard-route", "cheap"), ("trace-bin", b"\x00"))
    headers = hints.lowercase_headers(metadata)
    assert headers == {"authorization": "Bearer sk-g", "x-switchyard-route": "cheap"}
    assert presented_key(headers.get("authorization"), headers.get("x-api-key")) == "sk-g"
    assert hints.hints_from_headers(headers).route == "cheap"


@pytest.mark.parametrize(
    ("path", "dialect"),
    [
        ("/llm.invoke", NATIVE),
        ("/v1/requests/req_1", NATIVE),
        ("/v1/chat/completions", OPENAI),
        ("/v1/models/demo/fast", OPENAI),
        ("/v1/embeddings", OPENAI),
        ("/v1/messages", ANTHROPIC),
        ("/v1/messages/count_tokens", ANTHROPIC),
        ("/nowhere", NATIVE),
    ],
)
def test_error_shape_by_path(path: str, dialect) -> None:
    assert dialect_for_path(path) is dialect


def test_error_headers_tell_sdks_whether_to_retry() -> None:
    spent = error_headers(GatewayError("budget_exceeded", "cap", retryable=False), "req_1", OPENAI)
    assert spent == {"x-should-retry": "false", "x-request-id": "req_1"}
    limited = error_headers(
        GatewayError("rate_limited", "slow", retryable=False, retry_after_s=2.4), "req_2", ANTHROPIC
    )
    assert limited == {
        "x-should-retry": "true",
        "Retry-After": "2",
        "x-request-id": "req_2",
        "request-id": "req_2",
    }
    assert error_headers(GatewayError("invalid_request", "x"), "", NATIVE) == {"x-should-retry": "false"}


def good_request() -> invoke_pb2.InvokeRequest:
    request = invoke_pb2.InvokeRequest(model="auto")
    request.messages.add(role=invoke_pb2.ROLE_USER).content.add(text="hi")
    return request


def test_a_good_grpc_request_passes() -> None:
    request = good_request()
    request.tools.add(name="f", parameters_json='{"type": "object"}')
    request.tool_choice.mode = invoke_pb2.ToolChoice.MODE_AUTO
    request.temperature = 0.2
    request.strategy.explicit = True
    request.strategy.cost = 1
    grpc_api.validate(request)


def _broken(change) -> invoke_pb2.InvokeRequest:
    request = good_request()
    change(request)
    return request


@pytest.mark.parametrize(
    ("request_", "param"),
    [
        (_broken(lambda r: r.ClearField("model")), "model"),
        (_broken(lambda r: setattr(r, "model", "m" * 300)), "model"),
        (_broken(lambda r: r.ClearField("messages")), "messages"),
        (_broken(lambda r: setattr(r.messages[0], "role", invoke_pb2.ROLE_UNSPECIFIED)), "messages.0.role"),
        (_broken(lambda r: r.messages.add(role=invoke_pb2.ROLE_TOOL)), "messages.1.tool_call_id"),
        (_broken(lambda r: r.tools.add(name="")), "tools.0.name"),
        (_broken(lambda r: r.tools.add(name="f", parameters_json="[1]")), "tools.0.parameters_json"),
        (
            _broken(lambda r: setattr(r.tool_choice, "mode", invoke_pb2.ToolChoice.MODE_TOOL)),
            "tool_choice.name",
        ),
        (
            _broken(lambda r: setattr(r.response_format, "type", invoke_pb2.ResponseFormat.TYPE_JSON_SCHEMA)),
            "response_format.name",
        ),
        (
            _broken(
                lambda r: r.response_format.MergeFrom(
                    invoke_pb2.ResponseFormat(
                        type=invoke_pb2.ResponseFormat.TYPE_JSON_SCHEMA, name="x", schema_json="{nope"
                    )
                )
            ),
            "response_format.schema_json",
        ),
        (_broken(lambda r: setattr(r, "temperature", 2.5)), "temperature"),
        (_broken(lambda r: setattr(r, "top_p", -0.1)), "top_p"),
        (_broken(lambda r: setattr(r.strategy, "preset", "random")), "strategy.preset"),
        (_broken(lambda r: setattr(r.strategy, "explicit", True)), "strategy"),
    ],
)
def test_bad_grpc_requests_are_invalid_arguments(request_: invoke_pb2.InvokeRequest, param: str) -> None:
    with pytest.raises(GatewayError) as caught:
        grpc_api.validate(request_)
    assert caught.value.code == "invalid_request"
    assert caught.value.param == param
    assert grpc_api.status_for(caught.value.code) == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("unauthorized", grpc.StatusCode.UNAUTHENTICATED),
        ("model_not_found", grpc.StatusCode.NOT_FOUND),
        ("budget_exceeded", grpc.StatusCode.RESOURCE_EXHAUSTED),
        ("rate_limited", grpc.StatusCode.RESOURCE_EXHAUSTED),
        ("unavailable", grpc.StatusCode.UNAVAILABLE),
        ("timeout", grpc.StatusCode.DEADLINE_EXCEEDED),
        ("internal", grpc.StatusCode.INTERNAL),
        ("something_new", grpc.StatusCode.UNKNOWN),
    ],
)
def test_grpc_status_codes(code: str, status: grpc.StatusCode) -> None:
    assert grpc_api.status_for(code) == status


def test_grpc_trailing_metadata() -> None:
    error = GatewayError("rate_limited", "slow down", retry_after_s=0.2)
    assert grpc_api.trailing_metadata(error, "req_1") == (
        ("switchyard-error-code", "rate_limited"),
        ("x-request-id", "req_1"),
        ("retry-after", "1"),
    )


# --- Errors the edge answers itself, in the caller's dialect (ASGI level: the real app, no bus) --

API_PATHS = (
    "/llm.invoke",
    "/v1/chat/completions",
    "/v1/messages",
    "/v1/responses",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/messages/count_tokens",
)


def error_kind(path: str, body: dict) -> str:
    """The error's kind in its dialect, after checking the body against that dialect's schema."""
    if path in ("/v1/chat/completions", "/v1/responses"):
        openai_api.OpenAIErrorResponse.model_validate(body)
        return f"{body['error']['type']}/{body['error']['code']}"
    if path == "/v1/messages":
        anthropic_api.AnthropicErrorResponse.model_validate(body)
        return body["error"]["type"]
    native.NativeErrorResponse.model_validate(body)
    return body["error"]["code"]


def assert_request_id(path: str, response: httpx.Response) -> None:
    request_id = response.headers["x-request-id"]
    assert request_id.startswith("req_")
    if path == "/v1/messages":
        assert response.headers["request-id"] == request_id
        assert response.json()["request_id"] == request_id
    elif path == "/llm.invoke":
        assert response.json()["error"]["request_id"] == request_id


def asgi_client(ingress: Ingress) -> httpx.AsyncClient:
    # No lifespan, so no bus: only what the edge answers before publishing can be asked.
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=ingress.app), base_url="http://ingress")


BIG_BODY = {"model": "auto", "messages": [{"role": "user", "content": "x" * 2000}], "max_tokens": 4}
# Valid on every API tested here (native, OpenAI, Anthropic).
BODY = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


@pytest.mark.parametrize(
    ("path", "status", "kind"),
    [
        ("/llm.invoke", 413, "payload_too_large"),
        ("/v1/chat/completions", 413, "invalid_request_error/payload_too_large"),
        ("/v1/messages", 413, "request_too_large"),
    ],
)
async def test_a_body_too_large_is_refused_in_the_callers_dialect(path: str, status: int, kind: str) -> None:
    # Authenticated (here: no key needed) before its size is judged: a 413 is recorded.
    async with asgi_client(Ingress(Settings(max_body_bytes=1000, auth_required=False))) as http:
        r = await http.post(path, json=BIG_BODY)
    assert r.status_code == status
    assert error_kind(path, r.json()) == kind
    assert r.headers["x-should-retry"] == "false"
    assert_request_id(path, r)


@pytest.mark.parametrize(
    ("path", "status", "kind"),
    [
        ("/llm.invoke", 503, "overloaded"),
        ("/v1/chat/completions", 503, "server_error/overloaded"),
        ("/v1/messages", 529, "overloaded_error"),  # Anthropic's own status for an overloaded API
    ],
)
async def test_shed_load_is_refused_in_the_callers_dialect(path: str, status: int, kind: str) -> None:
    # No key needed here: authentication runs before shedding (docs/reliability.md, the edge).
    ingress = Ingress(Settings(max_in_flight=2, auth_required=False))
    ingress.overload.in_flight = 2
    async with asgi_client(ingress) as http:
        r = await http.post(path, json={"model": "auto"})
        assert (await http.get("/healthz")).status_code == 200  # health is never shed
    assert r.status_code == status
    assert error_kind(path, r.json()) == kind
    assert r.headers["retry-after"] == "1" and r.headers["x-should-retry"] == "true"
    assert_request_id(path, r)


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/llm.invoke", "unauthorized"),
        ("/v1/chat/completions", "invalid_request_error/invalid_api_key"),
        ("/v1/messages", "authentication_error"),
    ],
)
async def test_a_missing_key_is_refused_in_the_callers_dialect(path: str, kind: str) -> None:
    async with asgi_client(Ingress(Settings(auth_required=True))) as http:
        r = await http.post(path, json={"model": "auto"})
    assert r.status_code == 401
    assert error_kind(path, r.json()) == kind
    assert r.headers["www-authenticate"] == 'Bearer realm="switchyard"'
    assert_request_id(path, r)


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/llm.invoke", "method_not_allowed"),
        ("/v1/chat/completions", "invalid_request_error/method_not_allowed"),
        ("/v1/messages", "invalid_request_error"),
    ],
)
async def test_a_wrong_method_is_refused_in_the_callers_dialect(path: str, kind: str) -> None:
    async with asgi_client(Ingress(Settings(auth_required=False))) as http:
        r = await http.get(path)
    assert r.status_code == 405
    assert error_kind(path, r.json()) == kind
    assert_request_id(path, r)


def test_every_http_api_is_routed_once() -> None:
    app = Ingress(Settings()).app
    posted = [route.path for route in app.routes if "POST" in (getattr(route, "methods", None) or ())]
    assert [p for p in posted if p in API_PATHS] == [api.path for api in HTTP_APIS] == list(API_PATHS)


def requests_counted(api: str, status: str) -> tuple[float, float, float]:
    """(ingress requests by api, requests by service, errors by service) for one outcome."""
    from prometheus_client import REGISTRY

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    return (
        value("switchyard_ingress_requests_total", api=api, status=status),
        value("switchyard_requests_total", service="ingress", status=status),
        value("switchyard_errors_total", service="ingress", code=status),
    )


@pytest.mark.parametrize(
    ("settings", "method", "path", "kwargs", "status", "api", "code"),
    [
        ({"max_body_bytes": 1000, "auth_required": False}, "POST", "/v1/messages", {"json": BIG_BODY}, 413, "anthropic", "payload_too_large"),
        ({"max_header_bytes": 64}, "POST", "/llm.invoke", {"headers": {"x-big": "y" * 100}}, 431, "native", "invalid_request"),
        ({"auth_required": True}, "POST", "/v1/chat/completions", {"json": {}}, 401, "openai", "unauthorized"),
        ({"auth_required": False}, "GET", "/v1/chat/completions", {}, 405, "openai", "method_not_allowed"),
        ({"auth_required": False}, "POST", "/v1/nothing-here", {"json": {}}, 404, "openai", "not_found"),
        ({"auth_required": False}, "POST", "/llm.invoke", {"content": b"{not json"}, 400, "native", "invalid_request"),
        ({"auth_required": False}, "POST", "/v1/messages", {"json": {"model": "auto"}}, 400, "anthropic", "invalid_request"),
        ({"auth_required": False}, "POST", "/llm.invoke", {"json": {}}, 503, "native", "overloaded"),
        ({"auth_required": True}, "GET", "/admin/v1/projects", {}, 401, "admin", "unauthorized"),
    ],
)  # fmt: skip
async def test_every_refusal_is_counted_once_with_its_code(
    settings: dict, method: str, path: str, kwargs: dict, status: int, api: str, code: str
) -> None:
    """The edge's and the app's refusals (before anything is published) are in the request
    metrics with the code they were answered with: once each, in both families, and as errors."""
    ingress = Ingress(Settings(**settings))
    ingress.admin_token = "sy-admin-test"
    if code == "overloaded":
        ingress.overload.ledger_lag = None  # the ledger's backlog unreadable: shed
    before = requests_counted(api, code)
    async with asgi_client(ingress) as http:
        r = await http.request(method, path, **kwargs)
    assert r.status_code == status, r.text
    assert requests_counted(api, code) == tuple(v + 1 for v in before)


async def test_an_unhandled_error_is_a_500_in_dialect_and_its_traceback_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Starlette re-raises after the 500 so the server logs the traceback; the app's own line
    carries the request id and no second traceback."""
    from starlette.requests import Request

    async def boom(request: Request) -> None:
        raise KeyError("choices")

    ingress = Ingress(Settings(auth_required=False))
    ingress.app.add_route("/v1/boom", boom, methods=["POST"])
    transport = httpx.ASGITransport(app=ingress.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as http:
        r = await http.post("/v1/boom", json={})
    assert (
        r.status_code == 500 and error_kind("/v1/chat/completions", r.json()) == "server_error/internal_error"
    )
    assert "KeyError" not in r.text
    ours = [rec for rec in caplog.records if rec.name == "switchyard.ingress"]
    assert len(ours) == 1 and ours[0].exc_info is None
    assert r.headers["x-request-id"] in ours[0].getMessage()
    with pytest.raises(KeyError):  # what the server sees, and logs with its traceback
        async with asgi_client(ingress) as http:
            await http.post("/v1/boom", json={})


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/llm.invoke", "internal"),
        ("/v1/chat/completions", "server_error/internal_error"),
        ("/v1/messages", "api_error"),
    ],
)
@pytest.mark.parametrize("where", ["relay", "edge"])
async def test_an_unhandled_error_on_an_api_is_a_500_in_its_dialect_logged_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, where: str, path: str, kind: str
) -> None:
    """The APIs' POSTs bypass Starlette's router and exception layers (app.IngressApp): an
    error in the relay (here: no lifespan, so no bus client) or in the edge chain in front of
    it is still a 500 in the caller's dialect with one log line, then re-raised for the server."""
    from switchyard.lifecycle import NotStartedError

    ingress = Ingress(Settings(auth_required=False))
    expected: type[Exception] = NotStartedError
    if where == "edge":  # authentication failing unexpectedly (not a refusal)

        def broken(authorization: str | None, x_api_key: str | None) -> None:
            raise LookupError("tenancy view")

        monkeypatch.setattr(ingress.auth, "identify", broken)
        expected = LookupError
    transport = httpx.ASGITransport(app=ingress.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as http:
        r = await http.post(path, json=BODY)
    assert r.status_code == 500 and error_kind(path, r.json()) == kind, r.text
    assert expected.__name__ not in r.text
    assert_request_id(path, r)
    ours = [rec for rec in caplog.records if rec.name == "switchyard.ingress"]
    assert len(ours) == 1 and ours[0].exc_info is None
    assert r.headers["x-request-id"] in ours[0].getMessage() and path in ours[0].getMessage()
    with pytest.raises(expected):  # what the server sees, and logs with its traceback
        async with asgi_client(ingress) as http:
            await http.post(path, json=BODY)
