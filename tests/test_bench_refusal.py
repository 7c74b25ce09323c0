"""`python -m bench.refusal` on a tiny load: every request refused by admission, and the
ingress's CPU per refusal reported (the figure is docs/performance.md's, not checked here)."""

from __future__ import annotations

import subprocess
import sys

import orjson

from switchyard.testing.stack import ROOT


def test_refusal_probe_refuses_every_request_and_reports_the_ingress_cpu() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.refusal", "--rate", "100", "--duration", "1", "--rounds", "2",
         "--no-pin", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    report = orjson.loads(run.stdout.strip().splitlines()[-1])
    assert len(report["rounds"]) == 2
    for round_ in report["rounds"]:
        assert round_["refused"] == 100 == round_["with_retry_after"]  # every request, a 503 with Retry-After
        assert round_["ingress_cpu_us_per_refusal"] > 0
        assert round_["latency_ms"]["p99"] > 0
    assert report["median_ingress_cpu_us_per_refusal"] > 0
