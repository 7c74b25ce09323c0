"""The overhead benchmark (`python -m bench`) runs end to end on a tiny load: it starts the
fake upstream and the whole gateway, drives both, and reports every figure docs/performance.md
quotes. Its numbers are not checked here: performance is shown by running the benchmark."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from switchyard.testing.stack import ROOT

PERCENTILES = {"p50", "p90", "p99", "max"}


def scratch_env(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A temp folder of the benchmark's own, to see what it leaves behind."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    return scratch, {**os.environ, "TMPDIR": str(scratch)}


def test_bench_runs_end_to_end_and_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    scratch, env = scratch_env(tmp_path)
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--rates", "10", "--duration", "1", "--rounds", "1",
         "--stream-rate", "10", "--max-search", "20", "--no-pin", "--overload-factor", "2",
         "--deadline-ms", "1000", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert not list(scratch.glob("switchyard-*")), "the gateway's folder is removed when it stops"
    report = orjson.loads(out.read_bytes())
    assert report["machine"]["cpus"] >= 1
    entry = report["rates"]["10"]
    for side in ("direct", "gateway"):
        assert entry[side]["sent"] == 10
        assert entry[side]["ok"] == entry[side]["sent"], entry[side]  # through the gateway too
        assert set(entry[side]["latency_ms"]) == PERCENTILES
    assert set(entry["overhead_ms"]) == PERCENTILES
    # CPU and memory of every service of the gateway, each its own process.
    assert {"ingress", "router", "ledger", "budget", "nats-server"} <= set(entry["resources"])
    assert any(name.startswith("providers") for name in entry["resources"])
    stream = report["stream"]
    assert stream["gateway"]["ok"] == stream["gateway"]["sent"] > 0
    assert set(stream["ttft_overhead_ms"]) == PERCENTILES
    assert stream["gateway"]["ttft_ms"]["p50"] > 0
    assert "max_sustainable_rps" in report
    assert "max sustainable throughput" in run.stdout
    # The overload mode: offered twice the max found, every request accounted for.
    overload = report["overload"]
    assert overload["rate"] == 2 * report["max_sustainable_rps"]
    sent = overload["sent"]
    assert (
        sent > 0 and overload["in_time"] + overload["late"] + overload["refused"] + overload["failed"] == sent
    )
    assert overload["in_time"] > 0 and overload["goodput_rps"] > 0
    assert set(overload["verdict"]) == {
        "in_time_share_of_max", "in_time_goal_met", "refusals_fast", "refusals_with_retry_after", "unanswered_share",
    }  # fmt: skip
    assert "overload: offered" in run.stdout


def test_cpu_probe_reports_every_process_per_request(tmp_path: Path) -> None:
    out = tmp_path / "cpu.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.cpu", "--requests", "5", "--windows", "1", "--warmup", "5", "--idle-s", "1",
         "--against", str(ROOT), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=scratch_env(tmp_path)[1],
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert not list((tmp_path / "tmp").glob("switchyard-*")), "both gateways' folders are removed"
    runs = orjson.loads(out.read_bytes())["runs"]
    # --against runs a second gateway on that checkout's code beside this one: both reported.
    assert set(runs) == {"this checkout", f"against {ROOT}"}
    assert runs[f"against {ROOT}"]["total_ms"] > 0
    run_report = runs["this checkout"]
    per_process = run_report["ms_cpu_per_request"]
    assert {"ingress", "router", "ledger", "budget", "nats-server"} <= set(per_process)
    assert any(name.startswith("providers") for name in per_process)
    # CPU times tick every 10 ms, so on so few requests one process may show none; the total
    # cannot, and it adds the processes up.
    assert all(ms >= 0 for ms in per_process.values()), per_process
    assert run_report["total_ms"] > 0
    assert abs(run_report["total_ms"] - sum(per_process.values())) < 0.05 * run_report["total_ms"] + 0.1
    assert run_report["sequential_p50_ms"] > 20.0  # the upstream's own delay is 20 ms
    # NATS messages per request, read from nats-server's /varz around each window: a request
    # crosses the bus several times, so neither count can be below one.
    for report in runs.values():
        messages = report["messages_per_request"]
        assert messages["in_msgs"] >= 1 and messages["out_msgs"] >= 1, messages
        assert {"in_msgs_net_of_idle", "out_msgs_net_of_idle"} <= set(messages)
        assert set(report["idle_messages_per_s"]) == {"in_msgs", "out_msgs"}
    assert "NATS messages per request" in run.stdout


def test_cpu_probe_streams_and_reports_cpu_per_chunk(tmp_path: Path) -> None:
    out = tmp_path / "cpu-stream.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.cpu", "--stream", "--words", "8", "--requests", "3", "--windows", "1",
         "--warmup", "5", "--idle-s", "1", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    report = orjson.loads(out.read_bytes())
    assert report["stream"] and report["chunks_per_stream"] == 8
    per_chunk = report["runs"]["this checkout"]["us_cpu_per_chunk"]
    assert {"ingress", "nats-server", "total"} <= set(per_chunk) and per_chunk["total"] > 0
    assert "per chunk" in run.stdout
