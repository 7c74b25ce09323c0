"""The hedging benchmark script runs end to end on a tiny load and reports every figure (its
figures are not checked: performance is shown by running the benchmark, not by tests). It runs
the cross-pool topology (two providers, two worker pools), which exercises everything the
one-worker one does plus the racer in the other pool."""

from __future__ import annotations

import subprocess
import sys

import orjson

from switchyard.testing.stack import ROOT


def test_hedge_bench_runs_and_reports_every_figure() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.hedge", "--requests", "10", "--rate", "10",
         "--slow-every", "5", "--slow-ms", "300", "--cross-pool", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=True,
    ).stdout  # fmt: skip
    report = orjson.loads(out[out.index("{") :])
    assert set(report["modes"]) == {"plain", "hedged"}
    assert report["topology"] == "two worker pools (one per provider)"
    for mode in report["modes"].values():
        assert mode["ledger_requests"] == 10
        assert {"ttft_ms_p50", "ttft_ms_p99", "upstream_calls", "extra_calls_share"} <= set(mode)
    assert report["modes"]["plain"]["hedges_fired"] == 0
    assert report["modes"]["plain"]["upstream_calls"] == 10
    # The ledger's totals agree whatever the load: a request costs the sum of its attempts.
    assert report["checks"]["ledger_cost_equals_attempt_sum"]
    assert set(report["checks"]) == {
        "ttft_p99_at_least_5x_lower", "extra_calls_at_most_15pct", "ledger_cost_equals_attempt_sum",
    }  # fmt: skip
