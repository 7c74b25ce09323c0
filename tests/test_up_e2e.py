"""`switchyard up` exactly as `make run` starts it: every service a child process, URLs printed,
a crashed child restarted, and everything stopped on SIGTERM with nothing left running."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import nats
import psutil
import pytest

from switchyard.natsserver import free_port
from switchyard.tenancy_store import read_admin_token
from switchyard.testing.stack import ROOT, ledger_sql, wait_until

pytestmark = pytest.mark.e2e


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


async def test_up_serves_records_restarts_and_stops_cleanly(tmp_path: Path) -> None:
    port, nats_port, dashboard_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    env.update(
        SWITCHYARD_PORT=str(port),
        SWITCHYARD_NATS_PORT=str(nats_port),
        SWITCHYARD_NATS_MONITOR_PORT="0",
        SWITCHYARD_DASHBOARD_PORT=str(dashboard_port),
        SWITCHYARD_DEMO_LATENCY_MS="5",
        PYTHONUNBUFFERED="1",
    )
    out_path = tmp_path / "up.out"
    with open(out_path, "wb") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "switchyard.cli", "up"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: "Switchyard is up." in out_path.read_text(), 60, what="switchyard up")
        banner = out_path.read_text()
        base = f"http://127.0.0.1:{port}"
        assert f"{base}/llm.invoke" in banner
        # A fresh data folder gets a default project and a development key, printed beside the URLs.
        dev_key = re.search(r"API key \(dev\)\s+(sy-\S+)", banner).group(1)
        assert (tmp_path / ".switchyard" / "dev-api-key").read_text().strip() == dev_key
        assert f"Bearer {dev_key}" in banner
        # The banner's dashboard link logs the browser in (a cookie); without it, no page.
        dashboard = f"http://127.0.0.1:{dashboard_port}/"
        login = re.search(r"dashboard\s+(http://\S+/login\?token=sy-dash-\S+)", banner).group(1)
        assert login.startswith(dashboard)
        assert httpx.get(dashboard, timeout=5).status_code == 401
        async with httpx.AsyncClient(timeout=5, follow_redirects=True) as browser:
            assert "Switchyard dashboard" in (await browser.get(login)).text
        # The default data folder is .switchyard/ in the working directory, holding both stores.
        assert (tmp_path / ".switchyard" / "nats").is_dir()
        assert (tmp_path / ".switchyard" / "clickhouse").is_dir()
        names = {" ".join(p.cmdline()[1:3]) for p in _children(up.pid)}
        for service in ("ledger", "budget", "providers", "router", "ingress"):
            assert f"-m services.{service}" in names, names

        async with httpx.AsyncClient(
            base_url=base, timeout=10, headers={"authorization": f"Bearer {dev_key}"}
        ) as http:
            body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
            assert (
                await http.post("/llm.invoke", json=body, headers={"authorization": ""})
            ).status_code == 401
            plain = (await http.post("/llm.invoke", json=body)).json()
            streamed = await http.post("/llm.invoke", json=dict(body, stream=True))
            assert streamed.status_code == 200 and "event: final" in streamed.text

            # Kill the router: the supervisor restarts it and the gateway answers again.
            router = next(p for p in _children(up.pid) if "services.router" in " ".join(p.cmdline()))
            router.send_signal(signal.SIGKILL)
            wait_until(lambda: "router exited" in out_path.read_text(), 10, what="crash noticed")

            def restarted() -> bool:
                return any(
                    "services.router" in " ".join(p.cmdline()) and p.pid != router.pid
                    for p in _children(up.pid)
                )

            wait_until(restarted, 20, what="router restarted")
            deadline = time.monotonic() + 20
            while True:
                r = await http.post("/llm.invoke", json=body)
                if r.status_code == 200 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert r.status_code == 200, r.text

        # The bus has users, generated into the data folder (0600); the test looks as the admin.
        bus = tmp_path / ".switchyard" / "bus"
        assert {stat.S_IMODE(p.stat().st_mode) for p in bus.iterdir()} == {0o600}
        admin = (bus / "admin.password").read_text().strip()
        nats_url = f"nats://admin:{admin}@127.0.0.1:{nats_port}"
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(f"nats://127.0.0.1:{nats_port}", allow_reconnect=False, connect_timeout=5)
        # No secret on any command line (`ps`) or in any child's environment.
        secrets = [p.read_text().strip() for p in bus.iterdir()]
        secrets.append((tmp_path / ".switchyard" / "admin-token").read_text().strip())
        for child in _children(up.pid):
            seen = " ".join(child.cmdline()) + " ".join(f"{k}={v}" for k, v in child.environ().items())
            assert not [s for s in secrets if s in seen], child.cmdline()
        nats_args = next(p.cmdline() for p in _children(up.pid) if "nats-server" in p.cmdline()[0])
        assert nats_args[nats_args.index("-a") + 1] == "127.0.0.1"

        async def landed() -> list[dict]:
            return await ledger_sql(
                nats_url,
                "SELECT request_id, stream FROM requests FINAL WHERE status = 'ok' ORDER BY ts",
                admin_token=read_admin_token(tmp_path / ".switchyard"),
            )

        deadline = time.monotonic() + 15
        while len(rows := await landed()) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert plain["request_id"] in {r["request_id"] for r in rows}
        assert any(r["stream"] for r in rows)
        assert len(rows) == 3
        # `switchyard sql` finds the analyst's password in the data folder by itself.
        cli = subprocess.run(
            [sys.executable, "-m", "switchyard.cli", "sql", "SELECT count() AS n FROM requests FINAL"],
            cwd=tmp_path,
            env=dict(env, SWITCHYARD_NATS_URL=f"nats://127.0.0.1:{nats_port}"),
            capture_output=True,
            timeout=60,
        )
        assert cli.returncode == 0 and cli.stdout.split() == [b"n", b"3"], cli.stderr

        every_pid = [p.pid for p in _children(up.pid)]
        up.send_signal(signal.SIGTERM)
        assert up.wait(40) == 0
        assert "switchyard: stopped" in out_path.read_text()
        assert not [
            pid for pid in every_pid if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
        ]
    finally:
        if up.poll() is None:
            for child in _children(up.pid):
                child.kill()
            up.kill()


def test_make_run_uses_the_same_command() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "$(BIN)/switchyard up" in makefile


def test_the_banner_shows_the_sdk_base_urls_and_how_to_turn_grpc_on(tmp_path: Path) -> None:
    """No processes: what `make run` prints for a new user pointing an SDK at the gateway."""
    from switchyard.settings import Settings
    from switchyard.supervisor import Stack as Supervised

    banner = Supervised(Settings(data_dir=tmp_path, port=8099, dashboard_port=8098)).banner()
    assert re.search(r"OpenAI SDKs\s+base_url=http://127\.0\.0\.1:8099/v1\n", banner)
    assert re.search(r"Anthropic SDKs\s+base_url=http://127\.0\.0\.1:8099\n", banner)
    assert "SWITCHYARD_GRPC_PORT=<port> make run" in banner
    with_grpc = Supervised(
        Settings(data_dir=tmp_path, port=8099, grpc_port=50077, dashboard_port=8098)
    ).banner()
    assert re.search(r"gRPC\s+127\.0\.0\.1:50077 ", with_grpc)


@pytest.mark.parametrize("worker_mode", ["service", "ingress"])
async def test_up_with_the_router_in_the_ingress_starts_no_router(tmp_path: Path, worker_mode: str) -> None:
    """SWITCHYARD_ROUTER_MODE=ingress (docs/architecture.md, "Where the router runs"): no router
    child; the ingress routes as the router's bus user, given by a file, never a secret in its
    environment; SIGTERM still stops everything with exit 0. With SWITCHYARD_WORKER_MODE=ingress
    ("Where the worker runs") no worker child either: the ingress calls the provider as the
    workers' bus user, given alike."""
    port, nats_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    env.update(
        SWITCHYARD_PORT=str(port),
        SWITCHYARD_NATS_PORT=str(nats_port),
        SWITCHYARD_NATS_MONITOR_PORT="0",
        SWITCHYARD_DASHBOARD_PORT=str(free_port()),
        SWITCHYARD_DEMO_LATENCY_MS="5",
        SWITCHYARD_ROUTER_MODE="ingress",
        SWITCHYARD_WORKER_MODE=worker_mode,
        PYTHONUNBUFFERED="1",
    )
    out_path = tmp_path / "up.out"
    with open(out_path, "wb") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "switchyard.cli", "up"], cwd=tmp_path, env=env, stdout=out, stderr=out
        )
    try:
        wait_until(lambda: "Switchyard is up." in out_path.read_text(), 60, what="switchyard up")
        dev_key = re.search(r"API key \(dev\)\s+(sy-\S+)", out_path.read_text()).group(1)
        children = _children(up.pid)
        names = {" ".join(p.cmdline()[1:3]) for p in children}
        assert "-m services.ingress" in names and "-m services.router" not in names, names
        assert ("-m services.providers" in names) is (worker_mode == "service"), names
        ingress = next(p for p in children if "services.ingress" in " ".join(p.cmdline()))
        r = httpx.post(
            f"http://127.0.0.1:{port}/llm.invoke",
            json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {dev_key}"},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        assert r.json()["rationale"]["decided_by"].endswith(f":{ingress.pid}")
        seen = ingress.environ()
        router_password = (tmp_path / ".switchyard" / "bus" / "router.password").read_text().strip()
        assert seen["SWITCHYARD_ROUTER_NATS_USER"] == "router"
        assert router_password not in " ".join(f"{k}={v}" for k, v in seen.items())
        if worker_mode == "ingress":
            worker_password = (tmp_path / ".switchyard" / "bus" / "providers.password").read_text().strip()
            assert seen["SWITCHYARD_WORKER_NATS_USER"] == "providers"
            assert worker_password not in " ".join(f"{k}={v}" for k, v in seen.items())
        up.send_signal(signal.SIGTERM)
        assert up.wait(40) == 0
    finally:
        if up.poll() is None:
            for child in _children(up.pid):
                child.kill()
            up.kill()
