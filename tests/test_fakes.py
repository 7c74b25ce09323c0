"""The fake upstreams' own control API, which other tests and the benchmark drive over HTTP."""

from __future__ import annotations

import subprocess
import sys

import httpx

from switchyard.testing.stack import ROOT
from tests.fakes import Behavior, OpenAIFake

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_http_control_api_scripts_faults_and_lists_requests() -> None:
    with OpenAIFake(default=Behavior(text="default")) as fake, httpx.Client(base_url=fake.url) as http:
        assert http.post("/_fake/behavior", json={"times": 1, "status": 429, "retry_after": "2"}).json() == {
            "ok": True
        }
        assert http.post("/_fake/behavior", json={"model": "slow", "text": "per model"}).status_code == 200
        assert http.post("/_fake/behavior", json={"nonsense": 1}).status_code == 400
        limited = http.post("/v1/chat/completions", json=CHAT)
        assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
        assert limited.json()["error"]["code"] == "rate_limit_exceeded"
        assert (
            http.post("/v1/chat/completions", json=CHAT).json()["choices"][0]["message"]["content"]
            == "default"
        )
        per_model = http.post("/v1/chat/completions", json=dict(CHAT, model="slow")).json()
        assert per_model["choices"][0]["message"]["content"] == "per model"
        seen = http.get("/_fake/requests").json()
        assert [(r["model"], r["outcome"]) for r in seen] == [("m", "error"), ("m", "ok"), ("slow", "ok")]
        http.post("/_fake/reset")
        assert http.get("/_fake/requests").json() == []
        bad = http.post("/v1/chat/completions", json={"messages": []})
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"


def test_a_fake_runs_as_its_own_process() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes", "mistral", "--api-key", "k-123456"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("READY http://127.0.0.1:")
        base = line.split()[1]
        r = httpx.post(f"{base}/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer k-123456"})
        assert r.status_code == 200 and r.json()["object"] == "chat.completion"
        assert httpx.post(f"{base}/v1/chat/completions", json=CHAT).status_code == 401
    finally:
        proc.terminate()
        proc.wait(10)
