"""SIGTERM drains: a service stops taking work, reports not-ready, finishes what is in flight,
then exits 0."""

from __future__ import annotations

import asyncio
import shutil
import signal
import tempfile
from pathlib import Path

import httpx

from switchyard.testing.stack import Stack

BODY = {"model": "demo/fast", "messages": [{"role": "user", "content": "slow"}], "max_tokens": 4}


async def test_worker_and_ingress_finish_in_flight_work_on_sigterm() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-drain-"))
    stack = Stack.create(workdir, SWITCHYARD_DEMO_LATENCY_MS="1500", SWITCHYARD_DEMO_CHUNK_DELAY_MS="300")
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
