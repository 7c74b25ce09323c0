"""The idle probe (`python -m bench.idle`) reports what an idle stack costs, per process and in
total. Its numbers are not checked: an idle stack's cost is shown by running the probe
(docs/performance.md, "Idle cost")."""

from __future__ import annotations

import subprocess
import sys

import orjson

from bench.idle import idle_report
from switchyard.testing.stack import ROOT


def test_idle_report_is_percent_of_one_core_per_process_and_thread() -> None:
    before = {"ingress": {"python": 1.0}, "ledger": {"python": 2.0, "MemoryWorker": 0.5}}
    after = {"ingress": {"python": 1.1}, "ledger": {"python": 2.0, "MemoryWorker": 0.7, "new": 0.1}}
    report = idle_report(before, after, 10.0)
    assert report["pct_of_one_core"] == {"ingress": 1.0, "ledger": 3.0}
    assert report["total_pct"] == 4.0
    # Threads that used nothing are left out; one that started during the window counts whole.
    assert report["threads"]["ledger"] == {"MemoryWorker": 2.0, "new": 1.0}


def test_idle_probe_reports_every_process_of_a_real_stack() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.idle", "--seconds", "2", "--settle", "0", "--warm", "2", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    report = orjson.loads(run.stdout.strip().splitlines()[-1])
    per_process = report["pct_of_one_core"]
    # Every service, nats-server and the supervising `switchyard up` itself.
    assert {"ingress", "router", "ledger", "budget", "nats-server", "supervisor"} <= set(per_process)
    assert any(name.startswith("providers") for name in per_process)
    assert all(pct >= 0 for pct in per_process.values()), per_process
    assert abs(report["total_pct"] - sum(per_process.values())) < 0.05
    assert report["warm_requests"] == 2
    assert report["seconds"] >= 2
