"""`python -m bench.coresplit`: where the gateway's one core goes, process by process, under a load.

bench.peer says how much the gateway carries; this says what each process spends per request
while it does, and whether the core was saturated. It starts the gateway as `switchyard up`
does, pinned to CPU 0, the upstream and the load on CPU 1, warms it (`--warm-rate` for
`--warm-s`: the adaptive admission learns its baseline), then runs one load for `--duration`:
open loop at `--rate` (bench.peerload's overload mode: spaced arrivals from 16 addresses,
deadline 1 s) or, with `--closed N`, a closed loop of N connections. Reported: CPU 0's time by
kind (/proc/stat: user, system, softirq, idle), and per process its CPU (user + system) per
answered request and the time its threads waited runnable for the core
(/proc/<pid>/task/*/schedstat).

Why it exists (docs/performance.md, "What stands in the way", item 7): the closed-loop maximum
(32 connections, requests in lock-step) and what the same core carries for spaced arrivals
differ by ~1.8x, because every process pays its event loop's wake-up, read and write per bus
message, and spaced arrivals come one per wake-up.

Run: python -m bench.coresplit --rate 300 --fast
     python -m bench.coresplit --closed 32 --fast
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import psutil

from switchyard.natsserver import free_port

from . import peerload
from .__main__ import Gateway, body_for, parse_settings, run_probe
from .peer import pin, start_upstream, wait_for_upstream

CPU_KINDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def cpu_times(cpu: int) -> dict[str, float]:
    """CPU `cpu`'s cumulative seconds by kind (/proc/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as stat:
        for line in stat:
            if line.startswith(f"cpu{cpu} "):
                return {
                    kind: int(value) / tick for kind, value in zip(CPU_KINDS, line.split()[1:], strict=False)
                }
    raise RuntimeError(f"no cpu{cpu} in /proc/stat")


def process_times(proc: psutil.Process) -> tuple[float, float]:
    """A process's CPU seconds (user + system) and its threads' seconds waiting runnable."""
    times = proc.cpu_times()
    waited_ns = 0
    task_dir = Path(f"/proc/{proc.pid}/task")
    for task in task_dir.iterdir() if task_dir.is_dir() else []:
        try:
            waited_ns += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):  # the thread ended meanwhile
            continue
    return times.user + times.system, waited_ns / 1e9


def split(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]], answered: int
) -> dict[str, dict[str, float]]:
    """Per process: ms of CPU per answered request and seconds waited runnable. Pure."""
    out = {}
    for name in sorted(after):
        cpu = after[name][0] - before[name][0]
        out[name] = {
            "cpu_s": round(cpu, 3),
            "cpu_ms_per_answer": round(1000 * cpu / answered, 3) if answered else 0.0,
            "waited_runnable_s": round(after[name][1] - before[name][1], 3),
        }
    return out


def measure(args: argparse.Namespace) -> dict:
    slow_port, fast_port = free_port(), free_port()
    gateway_cpu, load_cpu = (-1, -1) if args.no_pin else (0, 1)
    upstreams = [
        start_upstream(slow_port, args.delay_ms, cpu=load_cpu),
        start_upstream(fast_port, 0, cpu=load_cpu),
    ]
    gateway = None
    try:
        for port in (slow_port, fast_port):
            wait_for_upstream(f"http://127.0.0.1:{port}")
        upstream = fast_port if args.fast else slow_port
        gateway = Gateway(
            f"http://127.0.0.1:{upstream}",
            cpu=gateway_cpu,
            workdir=Path(tempfile.mkdtemp(prefix="switchyard-bench-coresplit-")),
            settings=parse_settings(args.gateway_env),
        )
        procs = gateway.services()
        if not args.no_pin:
            pin(procs, {gateway_cpu})
        url, body = f"{gateway.url}/v1/chat/completions", body_for("bench/echo", False)
        if args.warm_s > 0:
            peerload.run("overload", url, body, load_cpu, gateway.headers, rate=args.warm_rate,
                         duration=args.warm_s, deadline_ms=1000)  # fmt: skip
            time.sleep(1.0)
        core = max(gateway_cpu, 0)
        cpu_before, before = cpu_times(core), {n: process_times(p) for n, p in procs.items()}
        started = time.monotonic()
        if args.closed:
            result = peerload.run("closed", url, body, load_cpu, gateway.headers, connections=args.closed,
                                  duration=args.duration)  # fmt: skip
            answered = result["ok"]
            load = {"mode": "closed", "connections": args.closed, "achieved_rps": result["achieved_rps"],
                    "ok": result["ok"], "errors": result["errors"],
                    "refused_with_retry_after": result.get("refused_with_retry_after", 0)}  # fmt: skip
        else:
            result = peerload.run("overload", url, body, load_cpu, gateway.headers, rate=args.rate,
                                  duration=args.duration, deadline_ms=1000)  # fmt: skip
            answered = result["in_time"] + result["late"]
            load = {"mode": "open", "rate": args.rate, "answered_in_time_rps": result["goodput_rps"]}
            load |= {key: result[key] for key in ("sent", "in_time", "late", "refused", "failed")}
        elapsed = time.monotonic() - started
        cpu_after, after = cpu_times(core), {n: process_times(p) for n, p in procs.items()}
        processes = split(before, after, answered)
        return {
            "upstream_delay_ms": 0 if args.fast else args.delay_ms,
            "pinned": not args.no_pin,
            "elapsed_s": round(elapsed, 2),
            "load": load,
            "core_s": {kind: round(cpu_after[kind] - cpu_before[kind], 2) for kind in CPU_KINDS},
            "processes": processes,
            "gateway_cpu_ms_per_answer": round(sum(p["cpu_ms_per_answer"] for p in processes.values()), 3),
        }
    finally:
        if gateway is not None:
            gateway.stop()
        for upstream_proc in upstreams:
            upstream_proc.terminate()
            upstream_proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.coresplit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=300.0, help="open loop: requests per second")
    parser.add_argument(
        "--closed", type=int, default=0, help="a closed loop of this many connections instead"
    )
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--fast", action="store_true", help="the 0 ms upstream (default: --delay-ms)")
    parser.add_argument("--delay-ms", type=float, default=50.0, help="the slow upstream's delay")
    parser.add_argument("--warm-rate", type=float, default=100.0)
    parser.add_argument("--warm-s", type=float, default=5.0)
    return run_probe(parser, measure, show)


def show(report: dict) -> None:
    print(f"load: {report['load']}")
    print(f"CPU 0 over {report['elapsed_s']} s: {report['core_s']}")
    for name, figures in report["processes"].items():
        print(f"  {name:16s} {figures['cpu_ms_per_answer']:6.3f} ms per answer, "
              f"waited runnable {figures['waited_runnable_s']:6.2f} s")  # fmt: skip
    print(f"  {'total':16s} {report['gateway_cpu_ms_per_answer']:6.3f} ms per answer")


if __name__ == "__main__":
    raise SystemExit(main())
