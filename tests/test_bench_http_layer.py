"""The HTTP-layer probe (`python -m bench.http_layer`) answers each of its cases with the status
it names, from the checkout it was asked to measure. Its numbers are not checked (docs/
performance.md, "What was done for speed")."""

from __future__ import annotations

import subprocess
import sys

from switchyard.testing.stack import ROOT


def test_the_http_layer_probe_measures_each_answer_of_this_checkout() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.http_layer", "--requests", "20", "--rounds", "1", "--against", str(ROOT), "--repeat", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["this checkout", f"against {ROOT}"]
    for line in lines:
        assert "answered_200" in line and "(status 200)" in line
        assert "(status 400)" in line and "(status 503)" in line
