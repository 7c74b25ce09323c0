"""The gateway's vocabularies each live in one place: every error code has every mapping in the
one table (switchyard/errors.py), and the native, OpenAI, Anthropic, gRPC and OpenAPI renderings,
the retryable set and docs/api.md all come from it; statuses, finish reasons, APIs and strategy
presets are defined once (switchyard/vocab.py). Pure: no processes."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest

from services.ingress import anthropic_api, dialects, grpc_api, hints, native, openai_api
from services.ingress.openapi import STRATEGY_HEADER_PATTERN, openapi_document
from services.router import strategy
from switchyard.catalog import build_catalog
from switchyard.errors import CODES, HTTP_STATUS, RETRYABLE_CODES, ErrorCode, GatewayError, spec_for
from switchyard.vocab import FinishReason, Status, StrategyPreset, is_member

ROOT = Path(__file__).resolve().parent.parent
ALL_CODES = list(ErrorCode)


def test_every_code_has_every_mapping() -> None:
    assert set(CODES) == set(ErrorCode)
    for code, spec in CODES.items():
        assert 400 <= spec.http_status <= 599, code
        assert 400 <= spec.openai.status <= 599 and spec.openai.type and spec.openai.code, code
        assert 400 <= spec.anthropic.status <= 599 and spec.anthropic.type, code
        assert spec.grpc_status in grpc.StatusCode.__members__, code
        assert spec.grpc_status not in ("OK", "UNKNOWN"), code
        assert isinstance(spec.retryable, bool)


def test_the_derived_views_are_the_tables_columns() -> None:
    assert {c: s.http_status for c, s in CODES.items()} == HTTP_STATUS
    assert {c for c, s in CODES.items() if s.retryable} == RETRYABLE_CODES
    assert dict(openai_api.ERRORS) == {c: s.openai for c, s in CODES.items()}
    assert dict(anthropic_api.ERRORS) == {c: s.anthropic for c, s in CODES.items()}


@pytest.mark.parametrize("code", ALL_CODES)
def test_every_surface_renders_a_code_from_the_table(code: ErrorCode) -> None:
    spec = CODES[code]
    error = GatewayError(code, "msg", param="model")
    assert error.http_status == spec.http_status
    assert error.retryable is spec.retryable
    status, body = openai_api.error_body(error)
    assert (status, body["error"]["type"], body["error"]["code"]) == tuple(spec.openai)
    status, body = anthropic_api.error_body(error, "req_1")
    assert (status, body["error"]["type"]) == tuple(spec.anthropic)
    assert grpc_api.status_for(code) == grpc.StatusCode[spec.grpc_status]
    assert grpc_api.status_for(str(code)) == grpc.StatusCode[spec.grpc_status]  # the wire string too
    headers = dialects.error_headers(error, "req_1", dialects.OPENAI)
    assert headers["x-should-retry"] == ("true" if spec.retryable else "false")
    assert GatewayError.from_proto(error.to_proto("req_1")).code == code


def test_a_code_this_build_does_not_know_is_a_500_everywhere() -> None:
    error = GatewayError("something_new", "msg")
    assert spec_for("something_new").http_status == error.http_status == 500
    assert error.retryable is False
    assert openai_api.error_body(error)[1]["error"]["code"] == "something_new"
    assert openai_api.error_body(error)[0] == 500
    assert anthropic_api.error_body(error)[:1] == (500,)
    assert anthropic_api.error_body(error)[1]["error"]["type"] == "api_error"
    assert grpc_api.status_for("something_new") == grpc.StatusCode.UNKNOWN


def test_conflict_is_mapped_on_every_surface() -> None:
    """The code that had drifted into one table only."""
    error = GatewayError(ErrorCode.CONFLICT, "exists")
    assert error.http_status == 409
    assert openai_api.error_body(error)[0] == 409
    assert anthropic_api.error_body(error)[0] == 409
    assert grpc_api.status_for(ErrorCode.CONFLICT) == grpc.StatusCode.ABORTED


def _doc_error_rows() -> dict[str, tuple[str, ...]]:
    text = (ROOT / "docs/api.md").read_text()
    section = text.split("## Errors", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = tuple(cells[1:])
    return rows


def test_the_docs_error_table_is_the_table() -> None:
    def expected(spec) -> tuple[str, ...]:  # type: ignore[no-untyped-def]
        o, a = spec.openai, spec.anthropic
        return (
            str(spec.http_status),
            f"{o.status} `{o.type}` / `{o.code}`",
            f"{a.status} `{a.type}`",
            f"`{spec.grpc_status}`",
            "true" if spec.retryable else "false",
        )

    assert _doc_error_rows() == {str(c): expected(s) for c, s in CODES.items()}


def test_the_openapi_code_enums_come_from_the_vocabulary() -> None:
    schemas = openapi_document()["components"]["schemas"]
    assert schemas["ErrorCode"]["enum"] == [str(c) for c in ErrorCode]
    assert schemas["StrategyPreset"]["enum"] == [str(p) for p in StrategyPreset]
    assert schemas["FinishReason"]["enum"] == [str(f) for f in FinishReason]
    assert schemas["Status"]["enum"] == [str(s) for s in Status]


def test_every_preset_is_accepted_everywhere_and_nothing_else() -> None:
    assert set(strategy.PRESETS) == set(StrategyPreset)
    for name in StrategyPreset:
        assert hints.parse_strategy(str(name)).preset == name
        assert re.fullmatch(STRATEGY_HEADER_PATTERN, str(name))
        assert strategy.preset(str(name)) == strategy.PRESETS[name]
        body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "strategy": str(name)}
        assert native.InvokeBody.model_validate(body, strict=True).strategy is name
        catalog = build_catalog({"routes": {"r": {"deployments": ["demo/fast"], "strategy": str(name)}}}, {})
        assert catalog.routes["r"].strategy == name
    assert not is_member(StrategyPreset, "fast")
    assert not re.fullmatch(STRATEGY_HEADER_PATTERN, "fast")
    with pytest.raises(GatewayError):
        hints.parse_strategy("fast")
    with pytest.raises(ValueError, match="balanced, fastest, cheapest, best"):
        build_catalog({"routes": {"r": {"deployments": ["demo/fast"], "strategy": "fast"}}}, {})


def _sources() -> list[Path]:
    return [p for d in ("services", "switchyard") for p in (ROOT / d).rglob("*.py") if "_pb2" not in p.name]


@pytest.mark.parametrize(
    ("literal", "home"),
    [
        ('"cheapest"', "switchyard/vocab.py"),  # the preset list
        ('"rate_limit_exceeded"', "switchyard/errors.py"),  # the OpenAI error table
        ('"overloaded_error")', "switchyard/errors.py"),  # the Anthropic error table
        ("StatusCode.RESOURCE_EXHAUSTED", None),  # the gRPC table (kept by name in errors.py)
    ],
)
def test_each_vocabulary_is_spelled_in_one_place(literal: str, home: str | None) -> None:
    found = sorted(str(p.relative_to(ROOT)) for p in _sources() if literal in p.read_text())
    assert found == ([home] if home else [])


def test_every_adapter_maps_onto_the_finish_reasons() -> None:
    from services.providers.adapters import anthropic, gemini, openai

    for table in (openai.FINISH_REASONS, anthropic.STOP_REASONS, gemini.FINISH_REASONS):
        assert set(table.values()) <= set(FinishReason)
    assert set(anthropic_api.STOP_REASONS) == set(FinishReason) - {FinishReason.ERROR}
    assert set(openai_api.FINISH_REASONS) == set(FinishReason) - {FinishReason.ERROR}
