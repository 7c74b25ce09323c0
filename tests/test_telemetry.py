"""Tracing set-up: a process that exports nothing makes non-recording spans that still carry
trace ids; one that exports records them. Each case runs in its own interpreter, because
OpenTelemetry allows one tracer provider per process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from switchyard.testing.stack import ROOT

PROBE = """
import sys, orjson
from pathlib import Path
from switchyard import telemetry
telemetry.setup_tracing("probe", span_dir=Path(sys.argv[1]) if len(sys.argv) > 1 else None)
tracer = telemetry.tracer("probe")
with tracer.start_as_current_span("outer", attributes={"a": 1}) as span:
    recording = span.is_recording()
    headers = telemetry.inject_headers()
    ctx = telemetry.extract_context(headers)
    with tracer.start_as_current_span("inner", context=ctx):
        inner_trace = telemetry.current_trace_id()
    with telemetry.span(tracer, "light", parent=ctx, attributes=lambda: {"b": 2}) as light:
        light_trace = telemetry.current_trace_id()
        light_parent = telemetry.inject_headers().get("traceparent", "")
        light_recording = light.is_recording()
with telemetry.span(tracer, "fresh", parent=telemetry.extract_context({"traceparent": "00-zz"})):
    fresh_trace = telemetry.current_trace_id()
print(orjson.dumps({"recording": recording, "flag": telemetry.recording(),
    "light": light_trace, "light_parent": light_parent, "light_recording": light_recording,
    "fresh": fresh_trace,
    "trace_id": format(span.get_span_context().trace_id, "032x"), "inner": inner_trace,
    "traceparent": headers.get("traceparent", "")}).decode())
"""


def probe(*args: str, env: dict[str, str] | None = None) -> dict:
    run = subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return orjson.loads(run.stdout.strip().splitlines()[-1])


def test_without_an_exporter_spans_do_not_record_but_trace_ids_still_flow() -> None:
    result = probe()
    assert result["recording"] is False and result["flag"] is False
    assert result["trace_id"] != "0" * 32
    assert result["inner"] == result["trace_id"]  # continued through the propagated headers
    assert result["traceparent"].split("-")[1] == result["trace_id"]
    assert not int(result["traceparent"].split("-")[3], 16) & 1  # not sampled
    # telemetry.span builds no span here: the message's trace goes on, its traceparent unchanged.
    assert result["light"] == result["trace_id"] and result["light_recording"] is False
    assert result["light_parent"] == result["traceparent"]
    # A traceparent that cannot be read starts a trace of its own.
    assert result["fresh"] not in ("", result["trace_id"])


def test_with_an_exporter_spans_record_and_are_written(tmp_path: Path) -> None:
    result = probe(str(tmp_path))
    assert result["recording"] is True and result["flag"] is True
    assert int(result["traceparent"].split("-")[3], 16) & 1  # the sampled flag
    written = [
        orjson.loads(line) for path in tmp_path.glob("*.jsonl") for line in path.read_bytes().splitlines()
    ]
    assert {span["name"] for span in written} == {"outer", "inner", "light", "fresh"}
    assert {span["trace_id"] for span in written if span["name"] != "fresh"} == {result["trace_id"]}
    assert result["light_recording"] is True and result["light"] == result["trace_id"]
