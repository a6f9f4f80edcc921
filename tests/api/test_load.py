"""bench/load.py against a real server process with a small queue: every upload is accepted or
refused with 503 + Retry-After, every accepted task completes, none is lost."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

from tests.api.conftest import API_KEY
from tests.conftest import ROOT

PORT = 8102  # this suite's servers use 8100-8109 on loopback


def test_concurrent_uploads_are_accepted_or_refused_and_none_lost(
    serve: Callable[..., subprocess.Popen[bytes]],
) -> None:
    serve(PORT, MAX_QUEUE_SIZE="3", MAX_TASKS_PER_KEY="1000", MAX_UPLOADS_PER_KEY="1000", FAKE_STEP_SECONDS="0.02")
    command = [sys.executable, "-m", "bench.load", "--url", f"http://127.0.0.1:{PORT}", "--key", API_KEY]
    run = subprocess.run([*command, "--n", "16", "--timeout", "60"], cwd=ROOT, capture_output=True, text=True)
    print(run.stdout)
    assert run.returncode == 0, run.stdout + run.stderr
    figures = dict(line.rsplit(maxsplit=1) for line in run.stdout.splitlines()[:3])
    accepted, refused = int(figures["accepted (202)"]), int(figures["refused (503 + Retry-After)"])
    assert accepted + refused == 16
    assert refused > 0, "a queue of 3 must refuse some of 16 simultaneous uploads"
    assert accepted >= 4, "the running task and a full queue are accepted"
