"""The side-by-side benchmark (`python -m bench.peer`): Switchyard's leg runs end to end on a
tiny load and reports every figure of the comparison; the Portkey leg is checked only where
Portkey is already installed (no test needs npm or the network). No figure is judged here:
performance is shown by running the benchmark (docs/performance.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest

from bench.peer import (
    DEFAULT_PORTKEY_DIR,
    PINNED,
    START_SCRIPT,
    Portkey,
    anonymous_kib,
    missing_tool,
    portkey_package_json,
    wait_for_upstream,
)
from switchyard.natsserver import free_port
from switchyard.testing.stack import ROOT

PERCENTILES = {"p50", "p90", "p99", "max"}


def test_the_generated_package_pins_portkey_and_overrides_hono() -> None:
    package = portkey_package_json()
    assert package["dependencies"]["@portkey-ai/gateway"] == "1.15.2"
    # Newer hono and @hono/node-server answer 500 on streams: pinned for every dependent too.
    assert package["overrides"] == {"hono": "4.9.7", "@hono/node-server": "1.13.5"} == PINNED
    assert package["private"] is True


def test_missing_node_or_npm_is_named() -> None:
    assert missing_tool(lambda tool: f"/usr/bin/{tool}") is None
    assert "node is not on PATH" in str(missing_tool(lambda tool: None))
    assert "npm is not on PATH" in str(missing_tool(lambda tool: None if tool == "npm" else "/bin/node"))


def test_without_node_the_tool_says_so_and_starts_nothing(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=str(tmp_path))  # an empty folder: no node, no npm
    run = subprocess.run(
        [sys.executable, "-m", "bench.peer", "--portkey-dir", str(tmp_path / "portkey")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2, run.stdout + run.stderr
    assert "node is not on PATH" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "portkey").exists()  # nothing installed, nothing started


def test_switchyard_leg_reports_every_figure_of_the_comparison(tmp_path: Path) -> None:
    out = tmp_path / "peer.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.peer", "--portkey", "skip", "--rates", "10", "--stream-rates", "5",
         "--duration", "1", "--rounds", "1", "--closed-duration", "1", "--connections", "4",
         "--overload-duration", "1", "--idle", "0.5", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    report = orjson.loads(out.read_bytes())
    assert report["portkey"]["skipped"] == "--portkey skip"
    assert set(report["gateways"]) == {"switchyard"}
    figures = report["gateways"]["switchyard"]
    plain = figures["rates"]["10"]
    assert plain["gateway"]["ok"] == plain["gateway"]["sent"] == 10, plain["gateway"]
    assert set(plain["overhead_ms"]) == PERCENTILES
    assert plain["cpu_ms_per_request"] > 0  # summed over every process of the gateway
    stream = figures["stream"]["5"]
    assert stream["gateway"]["ok"] == stream["gateway"]["sent"] == 5
    assert set(stream["ttft_overhead_ms"]) == PERCENTILES
    assert stream["cpu_ms_per_request"] > 0
    assert figures["max_rps"]["one_core"]["achieved_rps"] > 0
    if report["machine"]["pinned"]:
        assert figures["max_rps"]["two_cores"]["achieved_rps"] > 0
    overload = figures["overload"]
    # Offered the overload factor times its own one-core maximum, every request accounted for.
    assert overload["rate"] == max(1.0, round(3 * figures["max_rps"]["one_core"]["achieved_rps"]))
    assert (
        overload["in_time"] + overload["late"] + overload["refused"] + overload["failed"] == overload["sent"]
    )
    assert "goodput_rps" in overload and "refusal_latency_ms" in overload
    assert figures["rss_mib"] > 0
    # The ledger's chDB library alone is ~230 MiB of file-backed resident memory.
    assert 0 < figures["anon_mib"] < figures["rss_mib"]
    assert "| of which anonymous (MiB) |" in run.stdout
    assert {"nats-server", "supervisor", "ingress", "ledger"} <= set(figures["idle"]["pct_of_one_core"])
    assert set(report["direct"]["rates"]["10"]["latency_ms"]) == PERCENTILES
    assert "| overhead at 10 req/s, p50 / p99 (ms) |" in run.stdout  # the side-by-side table


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
@pytest.mark.skipif(
    not (DEFAULT_PORTKEY_DIR / START_SCRIPT).exists(),
    reason=f"Portkey is not installed in {DEFAULT_PORTKEY_DIR} (`python -m bench.peer` installs it with npm)",
)
def test_portkey_answers_plain_and_streamed_calls_through_the_harness_headers(tmp_path: Path) -> None:
    port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "bench.upstream", "--port", str(port), "--delay-ms", "1", "--words", "3"],
        cwd=ROOT, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    portkey = None
    try:
        wait_for_upstream(f"http://127.0.0.1:{port}")  # else Portkey's first call can find nobody there
        portkey = Portkey(DEFAULT_PORTKEY_DIR, -1, tmp_path / "portkey.log")
        headers = {"x-portkey-provider": "openai", "x-portkey-custom-host": f"http://127.0.0.1:{port}/v1",
                   "authorization": "Bearer bench-upstream-key"}  # fmt: skip
        body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
        plain = httpx.post(f"{portkey.url}/v1/chat/completions", json=body, headers=headers, timeout=10)
        assert plain.status_code == 200, plain.text
        assert plain.json()["choices"][0]["message"]["content"] == "the quick brown"
        streamed = httpx.post(f"{portkey.url}/v1/chat/completions", json=body | {"stream": True},
                              headers=headers, timeout=10)  # fmt: skip
        assert streamed.status_code == 200, streamed.text  # the pinned hono: no 500 on streams
        assert "data: [DONE]" in streamed.text
        assert set(portkey.processes()) >= {"node"}
    finally:
        if portkey is not None:
            portkey.stop()
        upstream.terminate()
        upstream.wait(10)


def test_anonymous_memory_is_read_from_smaps_rollup() -> None:
    rollup = (
        "55d0c0a3b000-7ffd2f1f5000 ---p 00000000 00:00 0                          [rollup]\n"
        "Rss:              384744 kB\nPss:              363524 kB\nAnonymous:        115404 kB\n"
        "Swap:                  0 kB\n"
    )
    assert anonymous_kib(rollup) == 115404
    assert anonymous_kib("Rss: 1 kB\n") == 0
