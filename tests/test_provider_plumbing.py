"""Pure plumbing of the provider workers: SSE decoding, upstream error mapping, Retry-After,
deadlines, and usage of a call stopped mid-stream."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import aiohttp
import orjson
import pytest

from services.providers.execution import AttemptProgress
from services.providers.http_errors import (
    classify_status,
    error_from_exception,
    error_from_response,
    error_from_stream_event,
    retry_after_seconds,
)
from services.providers.sse import LineSplitter, SSEDecoder, SSEEvent, decode_lines
from services.providers.upstream import Deadline, proxy_for
from switchyard.catalog import Timeouts
from switchyard.logs import register_secret
from switchyard.tokens import estimate_prompt_tokens
from switchyard.v1 import invoke_pb2


def test_sse_named_events_multiline_data_comments_and_a_missing_last_blank_line() -> None:
    lines = [
        ": keep-alive",
        "event: message_start",
        'data: {"a": 1}',
        "",
        "data:first",
        "data: second",
        "id: 7",
        "retry: 100",
        "",
        "",
        "data: [DONE]",
    ]
    assert decode_lines(lines) == [
        SSEEvent("message_start", '{"a": 1}'),
        SSEEvent("message", "first\nsecond", "7"),
        SSEEvent("message", "[DONE]", "7"),  # the last event id persists, as the spec says
    ]
    decoder = SSEDecoder()
    assert decoder.feed("event: ping") is None
    assert decoder.feed("") is None  # an event with no data is not dispatched
    assert decoder.feed("data: x") is None and decoder.feed("").event == "message"


def test_the_proxy_comes_from_the_environment_unless_no_proxy_exempts_the_host(monkeypatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,.corp.example")
    for name in ("https_proxy", "no_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    proxy_for.cache_clear()
    try:
        assert proxy_for("https", "api.openai.com") == "http://proxy.internal:3128"
        assert proxy_for("https", "llm.corp.example") is None
        assert proxy_for("http", "api.openai.com") is None  # no HTTP_PROXY set
    finally:
        proxy_for.cache_clear()


def test_line_splitter_handles_every_line_ending_and_characters_split_across_reads() -> None:
    splitter = LineSplitter()
    reads = [b"data: a\r", b"\ndata: caf\xc3", b"\xa9\r\r\n", b"event: x\ndata: tail"]
    lines = [line for read in reads for line in splitter.feed(read)]
    # The CR at the end of the first read and the LF starting the second make one line ending.
    assert lines == ["data: a", "data: café", "", "event: x"]
    assert splitter.flush() == ["data: tail"]  # the last line had no ending
    assert splitter.flush() == []


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (400, "invalid_request", False),
        (401, "provider_auth_failed", True),  # the gateway's own key: fail over, not the caller's 401
        (403, "provider_auth_failed", True),
        (404, "not_found", False),
        (408, "timeout", True),
        (413, "payload_too_large", False),
        (418, "invalid_request", False),
        (422, "unprocessable", False),
        (429, "rate_limited", True),
        (500, "upstream_error", True),
        (502, "upstream_error", True),
        (503, "unavailable", True),
        (504, "timeout", True),
        (529, "overloaded", True),
        (599, "upstream_error", True),
    ],
)
def test_status_classes(status: int, code: str, retryable: bool) -> None:
    assert classify_status(status) == (code, retryable)


def test_retry_after_in_seconds_milliseconds_and_http_dates() -> None:
    assert retry_after_seconds({"Retry-After": "12"}) == 12.0
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    now = datetime(2026, 11, 2, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds({"Retry-After": "Mon, 02 Nov 2026 12:00:30 GMT"}, now) == 30.0
    assert retry_after_seconds({"Retry-After": "soon"}) == 0.0
    assert retry_after_seconds({"Retry-After": "-5"}) == 0.0
    assert retry_after_seconds({"Retry-After": "99999999"}) == 3600.0
    assert retry_after_seconds({}) == 0.0


def _body(data: object) -> bytes:
    return orjson.dumps(data)


def test_each_providers_error_body_becomes_one_neutral_error() -> None:
    openai = error_from_response(
        "openai",
        429,
        {"retry-after": "20"},
        _body(
            {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
        ),
    )
    assert (openai.code, openai.retryable, openai.provider_status, openai.retry_after_s) == (
        "rate_limited",
        True,
        429,
        20.0,
    )
    assert (
        openai.message == "openai returned 429 requests: Rate limit reached" and openai.provider == "openai"
    )

    anthropic = error_from_response(
        "anthropic",
        529,
        {},
        _body({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    )
    assert (anthropic.code, anthropic.retryable, anthropic.provider_status) == ("overloaded", True, 529)
    # overloaded_error is overloaded whatever the status it comes with
    assert (
        error_from_response("anthropic", 503, {}, _body({"error": {"type": "overloaded_error"}})).code
        == "overloaded"
    )

    bad_key = error_from_response(
        "gemini",
        400,
        {},
        _body({"error": {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT",
                         "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]}}),
    )  # fmt: skip
    assert (bad_key.code, bad_key.retryable, bad_key.provider_status) == ("provider_auth_failed", True, 400)
    assert bad_key.http_status == 502 and "credentials" in bad_key.message
    assert "API key not valid" not in bad_key.message and "API key not valid" in bad_key.detail

    quota = error_from_response(
        "gemini",
        429,
        {},
        _body({"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED",
                         "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}]}}),
    )  # fmt: skip
    assert (quota.code, quota.retry_after_s) == ("rate_limited", 17.0)

    mistral = error_from_response(
        "mistral",
        422,
        {},
        _body({"object": "error", "message": {"detail": [{"type": "extra_forbidden", "loc": ["body", "seed"]}]},
               "type": "invalid_request_message_error"}),
    )  # fmt: skip
    assert mistral.code == "unprocessable" and not mistral.retryable and "extra_forbidden" in mistral.message
    revoked = error_from_response("mistral", 401, {}, _body({"message": "Unauthorized"}))
    assert revoked.code == "provider_auth_failed" and "Unauthorized" in revoked.detail
    html = error_from_response("proxy", 502, {}, b"<html>Bad Gateway</html>")
    assert html.code == "upstream_error" and "Bad Gateway" in html.message
    empty = error_from_response("openai", 500, {}, b"")
    assert "Internal Server Error" in empty.message


def test_keys_in_upstream_error_messages_are_masked() -> None:
    register_secret("key-that-must-not-leak-42")
    error = error_from_response(
        "x",
        400,
        {},
        _body({"error": {"message": "bad key key-that-must-not-leak-42 and sk-abcdefghijklmnop"}}),
    )
    assert "key-that-must-not-leak-42" not in error.message and "sk-abcdefghijklmnop" not in error.message


def test_errors_inside_streams() -> None:
    anthropic = error_from_stream_event(
        "anthropic", {"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}
    )
    assert (anthropic.code, anthropic.retryable) == ("rate_limited", True)
    bad = error_from_stream_event("openai", {"error": {"type": "invalid_request_error", "message": "no"}})
    assert (bad.code, bad.retryable) == ("invalid_request", False)


def test_transport_failures() -> None:
    key = SimpleNamespace(host="127.0.0.1", port=9, ssl=True)
    refused = error_from_exception(
        "p", aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "refused"))
    )
    assert (refused.code, refused.retryable) == ("unavailable", True)
    assert refused.message == "could not connect to p"  # no host or port for the client...
    assert "127.0.0.1:9" in refused.detail  # ...but the operator has them
    slow = error_from_exception("p", aiohttp.ConnectionTimeoutError("slow"), "connect")
    assert slow.code == "timeout" and slow.message.startswith("connecting to p timed out")
    cut = error_from_exception("p", aiohttp.ServerDisconnectedError(), "mid-stream")
    assert cut.code == "upstream_error" and cut.retryable and "mid-stream" in cut.message
    short = error_from_exception("p", aiohttp.ClientPayloadError("Response payload is not completed"))
    assert short.code == "upstream_error" and "closed the connection" in short.message
    chunked = error_from_exception(
        "p",
        aiohttp.ClientPayloadError("Response payload is not completed: <TransferEncodingError: 400>"),
        "mid-stream",
    )
    assert chunked.message == "p closed the connection (mid-stream)"
    assert "TransferEncodingError" in chunked.detail and "ClientPayloadError" in chunked.detail
    odd = error_from_exception("p", KeyError("choices"))
    assert odd.message == "p transport error" and "KeyError" in odd.detail
    for error in (refused, slow, cut, short, chunked, odd):
        assert "Error" not in error.message and "127.0.0.1" not in error.message, error.message
        assert error.detail and error.detail not in str(error.to_proto("r"))  # never on the wire


def test_deadline_takes_the_tighter_of_the_deployment_total_and_the_request_deadline() -> None:
    timeouts = Timeouts(connect_s=1, first_byte_s=5, between_chunks_s=2, total_s=60)
    deadline = Deadline.start(timeouts, now=100.0)
    assert deadline.budget(deadline.first_byte_s, 100.0) == (5, False)
    assert deadline.budget(deadline.between_chunks_s, 159.0) == (1.0, True)  # total binds
    import time

    soon = int(time.time() * 1000) + 3000
    capped = Deadline.start(timeouts, soon, now=0.0)
    assert 2.0 < capped.total_at <= 3.0
    assert Deadline.start(timeouts, int(time.time() * 1000) - 10_000, now=0.0).total_at == 0.0


def test_usage_of_a_stopped_call_prefers_provider_counts_then_estimates() -> None:
    request = invoke_pb2.InvokeRequest()
    request.messages.add(role=invoke_pb2.ROLE_USER).content.add(text="x" * 400)
    progress = AttemptProgress(started_ms=0.0)
    progress.add_chunk(invoke_pb2.Chunk(delta_text="a" * 10))
    progress.add_chunk(
        invoke_pb2.Chunk(tool_calls=[invoke_pb2.ToolCallDelta(name="fn", arguments_delta="{}")])
    )
    estimated = progress.usage(request)
    assert estimated.prompt_tokens == estimate_prompt_tokens(request) and estimated.completion_tokens == 4
    progress.reported = invoke_pb2.Usage(prompt_tokens=900, completion_tokens=2, cached_tokens=100)
    mixed = progress.usage(request)
    assert (mixed.prompt_tokens, mixed.completion_tokens, mixed.cached_tokens) == (900, 4, 100)
    progress.reported.completion_tokens = 50
    assert progress.usage(request).completion_tokens == 50
