"""The failover benchmark script runs end to end on a tiny load (its figures are not checked:
performance is shown by running the benchmark, not by tests)."""

from __future__ import annotations

import subprocess
import sys

import orjson

from switchyard.testing.stack import ROOT


def test_failover_bench_runs_and_reports_every_figure() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.failover", "--requests", "3", "--warmup", "1",
         "--decide-iterations", "20", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=True,
    ).stdout  # fmt: skip
    report = orjson.loads(out[out.index("{") :])
    assert set(report["routes"]) == {"direct", "same-pool", "cross-pool"}
    for route in ("same-pool", "cross-pool"):
        assert {"gap_ms_p50", "gap_ms_p99", "overhead_added_ms_p50"} <= set(report["routes"][route])
        assert report["routes"][route]["gap_ms_p50"] >= 0
    assert report["routes"]["direct"]["decision_us_p50"] > 0
    assert set(report["decide_in_process_us"]) == {"2 candidates", "10 candidates"}
