"""`switchyard up` on Ctrl-C and beside another stack (issue 16 findings 3 and 5).

Ctrl-C in a terminal is SIGINT to the whole foreground process group: here `make run`'s (make
and the `switchyard up` it runs, started from this checkout). NATS runs in its own
session, so only make and the supervisor hear it and stops the services first (the ingress drains its
stream, the worker flushes its completion) and NATS last. A second stack whose ports are taken
refuses to start, naming the port, and never talks to the first stack's NATS.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from switchyard.natsserver import free_port
from switchyard.tenancy_store import read_admin_token
from switchyard.testing.stack import ledger_sql, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def _env(port: int, nats_port: int, dashboard_port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    env.update(
        SWITCHYARD_PORT=str(port),
        SWITCHYARD_NATS_PORT=str(nats_port),
        SWITCHYARD_NATS_MONITOR_PORT="0",
        SWITCHYARD_DASHBOARD_PORT=str(dashboard_port),
        SWITCHYARD_DEMO_LATENCY_MS="5",
        SWITCHYARD_DEMO_CHUNK_DELAY_MS="150",  # 24 words: a stream lasts ~3.5 s
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def _up(cwd: Path, env: dict[str, str], out_path: Path) -> subprocess.Popen[bytes]:
    with open(out_path, "ab") as out:
        # Its own process group, as a shell gives `make run`: the test signals that group.
        return subprocess.Popen(
            [sys.executable, "-m", "switchyard.cli", "up"],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


REPO = Path(__file__).resolve().parents[1]


def _make_run(data_dir: Path, env: dict[str, str], out_path: Path) -> subprocess.Popen[bytes]:
    """`make run` in this checkout, its data in `data_dir`, in its own process group (a shell's
    foreground job): what a user starts and presses Ctrl-C in."""
    with open(out_path, "ab") as out:
        return subprocess.Popen(
            ["make", "-s", "-C", str(REPO), "run"],
            env={**env, "SWITCHYARD_DATA_DIR": str(data_dir)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_foreground_signals,
        )


def _foreground_signals() -> None:
    """Ctrl-C's default action, as a shell gives its foreground job. A suite started in the
    background (`cmd &` in a script) has SIGINT ignored, and make, which does not catch a signal
    it inherited ignored, would then not end by it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _kill_tree(up: subprocess.Popen[bytes]) -> None:
    if up.poll() is None:
        for child in _descendants(up.pid):
            child.kill()
        up.kill()
        up.wait()


async def test_ctrl_c_stops_in_order_and_a_second_stack_never_joins(tmp_path: Path) -> None:
    port, nats_port, dashboard_port = free_port(), free_port(), free_port()
    env = _env(port, nats_port, dashboard_port)
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    out_path = tmp_path / "up.out"
    up = _make_run(first_dir / ".switchyard", env, out_path)
    try:
        wait_until(lambda: "Switchyard is up." in out_path.read_text(), 120, what="switchyard up")
        dev_key = re.search(r"API key \(dev\)\s+(sy-\S+)", out_path.read_text()).group(1)

        # Another checkout on the same machine, with the default ports the first one took.
        second_out = tmp_path / "second.out"
        second = _up(second_dir, _env(port, nats_port, free_port()), second_out)
        try:
            assert second.wait(60) == 1
        finally:
            _kill_tree(second)
        said = second_out.read_text()
        assert f"NATS port {nats_port}" in said and f"API (SWITCHYARD_PORT) port {port}" in said, said
        assert "Switchyard is up." not in said
        assert not (second_dir / ".switchyard" / "dev-api-key").exists()  # no key minted anywhere
        connz = httpx.get(_monitor_url(out_path.read_text()) + "/connz?limit=100", timeout=5).json()
        assert not [c for c in connz["connections"] if c.get("name") == "switchyard-supervisor"]

        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=60, headers={"authorization": f"Bearer {dev_key}"}
        ) as http:
            body = {"model": "auto", "messages": [{"role": "user", "content": "ctrl c"}], "stream": True}
            text = ""
            async with http.stream("POST", "/llm.invoke", json=body) as response:
                async for piece in response.aiter_text():
                    if not text:  # the first chunk is out: Ctrl-C, as a terminal sends it
                        before_stop = len(out_path.read_text())
                        os.killpg(up.pid, signal.SIGINT)
                    text += piece
        assert "event: final" in text, text[-400:]
        request_id = re.search(r'"request_id":\s*"([^"]+)"', text).group(1)
        every_pid = [p.pid for p in _descendants(up.pid)]
        # make waits for `switchyard up` to stop, then ends by the signal it got (as make does).
        assert up.wait(60) in (-signal.SIGINT, 2)
        said = out_path.read_text()[before_stop:]
        assert "switchyard: stopped" in said
        # No flood of reconnect warnings (NATS used to die first: ~200 of them).
        assert said.count("WARNING") < 20 and "Traceback" not in said, said
        assert not [p for p in every_pid if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    finally:
        _kill_tree(up)

    # Started again on the same data folder: the streamed request is in the ledger.
    up = _up(first_dir, env, out_path)
    try:
        wait_until(lambda: out_path.read_text().count("Switchyard is up.") == 2, 120, what="second start")
        token = read_admin_token(first_dir / ".switchyard")
        admin = (first_dir / ".switchyard" / "bus" / "admin.password").read_text().strip()
        deadline = time.monotonic() + 30
        rows: list[dict] = []
        while not rows and time.monotonic() < deadline:
            rows = await ledger_sql(
                f"nats://admin:{admin}@127.0.0.1:{nats_port}",
                "SELECT status FROM requests FINAL WHERE request_id = {id:String}",
                {"id": request_id},
                admin_token=token,
            )
            await asyncio.sleep(0.2)
        assert [r["status"] for r in rows] == ["ok"]
        up.send_signal(signal.SIGTERM)
        assert up.wait(60) == 0
    finally:
        _kill_tree(up)


def _monitor_url(banner: str) -> str:
    return re.search(r"NATS monitoring\s+(http://\S+)", banner).group(1)


def test_a_stop_during_start_up_ends_it_at_once_and_leaves_no_process(tmp_path: Path) -> None:
    # Before, a SIGTERM or Ctrl-C while the services were starting was acted on only once every
    # one was ready (up to a minute, or the bus set-up's 30 s): `switchyard up` looked hung.
    out_path = tmp_path / "up.out"
    up = _up(tmp_path, _env(free_port(), free_port(), free_port()), out_path)
    try:
        # The services are spawned and none can be ready yet (importing one takes longer than
        # this poll): the supervisor is waiting for their readiness.
        wait_until(
            lambda: any("services." in " ".join(p.cmdline()) for p in _descendants(up.pid)),
            60,
            what="the first service started",
        )
        every_pid = [p.pid for p in _descendants(up.pid)]
        up.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        assert up.wait(30) == 0
        took_s = time.monotonic() - stopped_at
    finally:
        _kill_tree(up)
    said = out_path.read_text()
    assert "switchyard: SIGTERM during start-up" in said and "switchyard: stopped" in said, said
    assert "Switchyard is up." not in said and "Traceback" not in said, said
    assert took_s < 15, said  # what started is stopped (each service within its TERM wait), not awaited
    assert not [p for p in every_pid if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]


def test_a_stop_whose_exception_python_dropped_still_ends_the_readiness_wait(tmp_path: Path) -> None:
    """The signal handler raises StopDuringStart; Python drops an exception raised where it
    cannot propagate (a CI run: inside logging's at-fork hook as a child was started), and
    `switchyard up` then started everything before stopping. The readiness wait now raises it
    on the signal's record too."""
    from switchyard.settings import Settings
    from switchyard.supervisor import Child, StopDuringStart
    from switchyard.supervisor import Stack as Supervised

    child = Child("ledger", [sys.executable, "-c", "import time; time.sleep(30)"], dict(os.environ),
                  f"http://127.0.0.1:{free_port()}/readyz")  # fmt: skip
    supervised = Supervised(Settings(data_dir=tmp_path), children=[child])
    child.start()
    try:
        supervised.stop_asked = "SIGTERM"  # the handler ran; its exception went nowhere
        started = time.monotonic()
        with pytest.raises(StopDuringStart, match="SIGTERM"):
            supervised.wait_ready(30.0)
        assert time.monotonic() - started < 5
    finally:
        child.started_process.kill()
        child.started_process.wait()


def test_a_dropped_stop_prints_no_traceback_and_other_dropped_exceptions_still_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A CI run's `switchyard up` printed "Exception ignored ... Traceback" for the stop its
    handler raised inside logging's at-fork hook (it then stopped as asked): the hook
    `up` installs keeps that off the terminal, and nothing else."""
    from switchyard.supervisor import StopDuringStart, quiet_dropped_stops

    reported: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", quiet_dropped_stops(lambda u: reported.append(u.exc_value)))

    class RaisesWhenCollected:
        def __init__(self, exc: BaseException) -> None:
            self.exc = exc

        def __del__(self) -> None:  # where Python cannot propagate: it reports, then drops
            raise self.exc

    RaisesWhenCollected(StopDuringStart("SIGTERM"))
    assert reported == []
    dropped = ValueError("not a stop")
    RaisesWhenCollected(dropped)
    assert reported == [dropped]
