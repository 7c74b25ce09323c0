"""`python -m bench.coresplit`: per-process CPU per answer and the core's time by kind (the
figures are docs/performance.md's, not checked here)."""

from __future__ import annotations

import subprocess
import sys

import orjson

from bench.coresplit import split
from switchyard.testing.stack import ROOT


def test_split_is_cpu_per_answer_and_waits_per_process() -> None:
    before = {"ingress": (1.0, 0.5), "router": (2.0, 1.0)}
    after = {"ingress": (1.5, 0.75), "router": (2.25, 1.0)}
    assert split(before, after, 100) == {
        "ingress": {"cpu_s": 0.5, "cpu_ms_per_answer": 5.0, "waited_runnable_s": 0.25},
        "router": {"cpu_s": 0.25, "cpu_ms_per_answer": 2.5, "waited_runnable_s": 0.0},
    }
    assert split(before, after, 0)["ingress"]["cpu_ms_per_answer"] == 0.0  # nothing answered


def test_coresplit_reports_every_process_of_an_open_loop() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.coresplit", "--rate", "20", "--duration", "1", "--warm-s", "0",
         "--fast", "--no-pin", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    report = orjson.loads(run.stdout.strip().splitlines()[-1])
    load = report["load"]
    assert load["mode"] == "open" and load["sent"] == 20
    assert load["in_time"] + load["late"] + load["refused"] + load["failed"] == 20  # each classed once
    assert load["in_time"] > 0  # answers to divide the CPU by (deadline 1 s: a loaded CI may miss some)
    assert {"ingress", "router", "budget", "ledger", "nats-server"} <= set(report["processes"])
    assert report["processes"]["ingress"]["cpu_ms_per_answer"] > 0
    assert report["gateway_cpu_ms_per_answer"] > 0
    assert set(report["core_s"]) >= {"user", "system", "idle", "softirq"}
