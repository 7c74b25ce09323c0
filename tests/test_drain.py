"""SIGTERM drains: a service stops taking work, reports not-ready, finishes what is in flight,
then exits 0."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from switchyard.natsserver import free_port
from switchyard.testing.stack import ROOT, ROUTER_MODES, Stack, wait_for_rows, wait_until

BODY = {"model": "demo/fast", "messages": [{"role": "user", "content": "slow"}], "max_tokens": 4}


@pytest.mark.parametrize("router_mode", ROUTER_MODES)  # "ingress": the router drains inside it
async def test_worker_and_ingress_finish_in_flight_work_on_sigterm(router_mode: str) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-drain-"))
    stack = Stack.create(
        workdir,
        SWITCHYARD_DEMO_LATENCY_MS="1500",
        SWITCHYARD_DEMO_CHUNK_DELAY_MS="300",
        SWITCHYARD_ROUTER_MODE=router_mode,
    )
    try:
        stack.start_all()
        worker = stack.by_name("worker-demo")[0]
        ingress = stack.by_name("ingress")[0]
        async with httpx.AsyncClient(base_url=stack.ingress_url, headers=stack.headers, timeout=20) as http:
            plain = asyncio.create_task(http.post("/llm.invoke", json=BODY))
            streamed = asyncio.create_task(http.post("/llm.invoke", json=dict(BODY, stream=True)))
            await asyncio.sleep(0.5)  # both are now waiting on the upstream

            worker.process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            ready = httpx.get(worker.ready_url, timeout=2)
            assert ready.status_code == 503  # draining: not ready for new work
            late = await http.post("/llm.invoke", json=BODY)  # no other worker: refused at once
            assert late.status_code == 503

            ingress.process.send_signal(signal.SIGTERM)  # the ingress drains too
            first, second = await plain, await streamed
        assert first.status_code == 200, first.text
        assert first.json()["usage"]["completion_tokens"] == 4
        assert second.status_code == 200 and "event: final" in second.text
        assert worker.process.wait(15) == 0
        assert ingress.process.wait(15) == 0
        assert "draining" in worker.log() and "stopped" in worker.log()
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.timeout(300)  # several processes start on a machine others may load
@pytest.mark.parametrize(
    ("router_mode", "worker_mode"),
    [*((mode, "service") for mode in ROUTER_MODES), ("ingress", "ingress")],
)
async def test_ingress_sigterm_answers_what_it_holds_or_refuses_it_cleanly(
    router_mode: str, worker_mode: str
) -> None:
    """A rolling deploy: the ingress answers the requests it holds up to its drain time (the
    request deadline by default), then refuses the rest with 503 + Retry-After; never a 500,
    and the ledger has every request (issue 16 finding 6). With the worker in the ingress too,
    the upstream calls it runs are the ones answered or cancelled, and recorded, before it exits."""
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-ingress-drain-"))
    stack = Stack.create(
        workdir,
        SWITCHYARD_DEMO_LATENCY_MS="3000",
        SWITCHYARD_REQUEST_TIMEOUT_S="60",
        SWITCHYARD_ROUTER_MODE=router_mode,
        SWITCHYARD_WORKER_MODE=worker_mode,
    )
    held = 10  # the count
    try:
        stack.start_all()
        outcomes = {}
        for label, drain in (("answered", "0"), ("refused", "1")):
            ingress = stack.spawn("ingress-" + label, "services.ingress", SWITCHYARD_INGRESS_DRAIN_S=drain)
            async with httpx.AsyncClient(
                base_url=stack.ingress_url, headers=stack.headers, timeout=30
            ) as http:
                calls = [asyncio.create_task(http.post("/llm.invoke", json=BODY)) for _ in range(held)]
                await asyncio.sleep(1.0)  # all of them wait on the upstream
                ingress.process.send_signal(signal.SIGTERM)
                outcomes[label] = await asyncio.gather(*calls)
            assert ingress.process.wait(30) == 0
        assert [r.status_code for r in outcomes["answered"]] == [200] * held
        for refused in outcomes["refused"]:
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"] and refused.json()["error"]["code"] == "unavailable"
        rows = await wait_for_rows(stack.nats.url, "SELECT status FROM requests FINAL", 2 * held)
        assert sorted(r["status"] for r in rows) == ["cancelled"] * held + ["ok"] * held
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_a_service_stopped_during_its_start_up_exits() -> None:
    """A ledger that cannot reach NATS yet is still starting; SIGTERM then ends it (it used to
    log "stopped" and keep running until killed by hand; issue 16 finding 9)."""
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-start-stop-"))
    env = Stack.base_env(f"nats://127.0.0.1:{free_port()}", workdir, SWITCHYARD_DASHBOARD_PORT="0")
    log = workdir / "ledger.log"
    try:
        with open(log, "wb") as out:
            ledger = subprocess.Popen(
                [sys.executable, "-m", "services.ledger"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        try:
            wait_until(lambda: "Connection refused" in log.read_text(), 90, what="ledger waiting for NATS")
            ledger.send_signal(signal.SIGTERM)
            assert ledger.wait(30) == 0
        finally:
            if ledger.poll() is None:
                ledger.kill()
                ledger.wait()
        assert "stopped during start-up" in log.read_text()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
