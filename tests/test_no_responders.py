"""With no router (or no worker) listening, the ingress answers 503 at once, not a timeout."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import httpx

from switchyard.testing.stack import Stack


async def test_no_router_is_a_fast_503_then_a_worker_less_route_too() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-nr-"))
    stack = Stack.create(workdir)
    try:
        ledger = stack.spawn("ledger", "services.ledger", wait=False)  # the budget rebuilds from it
        stack.spawn("ingress", "services.ingress")
        stack.provision()
        body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
        async with httpx.AsyncClient(base_url=stack.ingress_url, headers=stack.headers) as http:
            started = time.monotonic()
            r = await http.post("/llm.invoke", json=body)
            assert time.monotonic() - started < 2
            assert r.status_code == 503
            assert r.json()["error"]["code"] == "unavailable"
            assert r.headers["retry-after"] == "1"

            stack.wait_ready(ledger)
            stack.spawn("budget", "services.budget")
            stack.spawn("router", "services.router")
            r = await http.post("/llm.invoke", json=body)  # router up, no demo worker
            assert r.status_code == 503
            assert "provider worker" in r.json()["error"]["message"]
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)
