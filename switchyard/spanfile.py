"""A span exporter that appends finished spans as JSON lines to a file: one file per process.

For tests and local debugging across processes, where an in-memory exporter cannot see the
other services: set SWITCHYARD_SPAN_DIR and each process writes `<service>-<pid>.jsonl` there;
a reader joins the files and groups spans by trace id. Not for production (OTLP is).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import INVALID_SPAN_CONTEXT


def span_record(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.get_span_context()
    if ctx is None:  # an ended span always has one; a hand-built ReadableSpan may not
        ctx = INVALID_SPAN_CONTEXT
    parent = span.parent
    return {
        "name": span.name,
        "service": span.resource.attributes.get("service.name", ""),
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "parent_span_id": format(parent.span_id, "016x") if parent else "",
        "kind": span.kind.name,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": {k: list(v) if isinstance(v, tuple) else v for k, v in (span.attributes or {}).items()},
    }


class JsonLinesSpanExporter(SpanExporter):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        data = b"".join(orjson.dumps(span_record(s)) + b"\n" for s in spans)
        with self._lock, open(self.path, "ab") as out:
            out.write(data)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def span_file(span_dir: Path, service: str) -> Path:
    return span_dir / f"{service}-{os.getpid()}.jsonl"


def read_spans(span_dir: Path) -> list[dict[str, Any]]:
    """Every span written into `span_dir` by any process."""
    spans = []
    for path in sorted(span_dir.glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            if line.strip():
                spans.append(orjson.loads(line))
    return spans
