"""OpenTelemetry set-up and W3C trace-context propagation through NATS headers."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

_provider: TracerProvider | None = None
_recording = True


def setup_tracing(
    service: str, exporter: SpanExporter | None = None, span_dir: Path | None = None
) -> TracerProvider:
    """Install a tracer provider for this process.

    OTLP export (HTTP/protobuf) turns on with the standard OTEL_EXPORTER_OTLP_ENDPOINT (or
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT). `span_dir` (SWITCHYARD_SPAN_DIR, tests) also writes
    every finished span at once as a JSON line (switchyard.spanfile).

    A process that exports nothing still makes spans, so trace ids flow through NATS headers
    into events and the ledger, but they do not record (no attributes kept, nothing ended into
    a processor): that was 5-10 % of each service's CPU for spans nobody would read. Their
    traceparent then says "not sampled", so set the same OTEL_* variables on every service.
    OTEL_TRACES_SAMPLER, when set, decides instead.
    """
    global _provider, _recording
    otlp = bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )
    exporting = exporter is not None or span_dir is not None or otlp
    _recording = exporting or bool(os.environ.get("OTEL_TRACES_SAMPLER"))
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"switchyard-{service}"}),
        sampler=None if _recording else ALWAYS_OFF,
    )
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    if span_dir is not None:
        from switchyard.spanfile import JsonLinesSpanExporter, span_file

        provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(span_file(span_dir, service))))
    if otlp:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def recording() -> bool:
    """Whether this process's spans record anything (work done only for them can be skipped)."""
    return _recording


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def inject_headers(headers: dict[str, str] | None = None) -> dict[str, str]:
    """Headers carrying the current span's traceparent (for a NATS publish)."""
    carrier: dict[str, str] = headers if headers is not None else {}
    propagate.inject(carrier)
    return carrier


def extract_context(headers: Mapping[str, str] | None) -> context.Context:
    if not _recording:
        # Only the trace id has to travel on (nothing here records, no baggage is used): read
        # the traceparent directly, a tenth of the propagators' cost (issue 15, profiles).
        parent = _traceparent(headers.get("traceparent", "") if headers else "")
        if parent is not None:
            return trace.set_span_in_context(trace.NonRecordingSpan(parent))
    return propagate.extract(dict(headers or {}))


def _traceparent(value: str) -> trace.SpanContext | None:
    """A W3C traceparent ("00-<32 hex>-<16 hex>-<2 hex>") as a remote span context, or None."""
    parts = value.split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(flags))


def span(
    tracer: trace.Tracer,
    name: str,
    *,
    parent: context.Context | None = None,
    kind: trace.SpanKind = trace.SpanKind.INTERNAL,
    attributes: Callable[[], Mapping[str, Any]] | None = None,
) -> AbstractContextManager[trace.Span]:
    """A span made current (child of `parent`, default the current context), where spans
    record. Where they do not, and the parent carries a trace, only the parent is made current:
    the trace id still reaches the headers this process sends and the events it writes, without
    a span built, sampled and ended for nothing (tens of microseconds each, several per
    request). `attributes` is only called when the span records."""
    if not _recording:
        current = trace.get_current_span(parent)
        if current.get_span_context().is_valid:
            return _carry(parent, current)
    return tracer.start_as_current_span(
        name, context=parent, kind=kind, attributes=dict(attributes()) if attributes else None
    )


@contextmanager
def _carry(parent: context.Context | None, current: trace.Span) -> Iterator[trace.Span]:
    if parent is None:  # already current
        yield current
        return
    token = context.attach(parent)
    try:
        yield current
    finally:
        context.detach(token)


def current_trace_id() -> str:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


def shutdown_tracing() -> None:
    if _provider is not None:
        _provider.shutdown()
