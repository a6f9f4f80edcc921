"""An aligner that many tasks want at once is downloaded once: by the first, while the others (threads
of one worker, and other worker processes on the same cache) wait for it and then find it cached.

Two processes with two threads each fetch the same aligner from a hub on loopback, which holds every
request until all four are under way (each has either asked the hub or logged that it waits).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from tests.conftest import ROOT, Deadline
from tests.hub_server import running_hub

REPO = "test-aligners/wav2vec2-finnish"

FETCH_TWICE = """
import json, logging, sys, threading
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
import whisperx.alignment  # the slow imports first: the four fetches start together
from app.config import Settings
from app.models import hub

hub.HUB_TIMEOUT_SECONDS = 120  # the test's hub holds the first request until all four are under way
settings = Settings(_env_file=None)
found = []
threads = [threading.Thread(target=lambda: found.append(hub.fetch_aligner("fi", settings).model_name)) for _ in "ab"]
print("ready", flush=True)
sys.stdin.readline()
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps(found))
"""


def fetcher(log: Path, environment: dict[str, str]) -> subprocess.Popen[str]:
    """A process that fetches the aligner in two threads once it reads a line."""
    with log.open("w") as stderr:
        return subprocess.Popen(
            [sys.executable, "-c", FETCH_TWICE], cwd=ROOT, env=environment, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=stderr, text=True,
        )  # fmt: skip


def test_concurrent_tasks_wanting_one_aligner_download_it_once(tmp_path: Path) -> None:
    files = tmp_path / "repo"
    files.mkdir()
    (files / "config.json").write_text('{"model_type": "wav2vec2"}')
    (files / "vocab.json").write_text('{"<pad>": 0, "a": 1}')
    (files / "model.safetensors").write_bytes(os.urandom(1 << 16))
    with running_hub({REPO: files}) as hub:
        hub.open.clear()
        environment = {
            **os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0",
            "MODEL_CACHE_DIR": str(tmp_path / "cache"), "ALIGN_MODEL": REPO, "ALIGN_LANGUAGES": "",
            "HF_HUB_DOWNLOAD_TIMEOUT": "120",
        }  # fmt: skip
        logs = [tmp_path / f"worker-{n}.log" for n in range(2)]
        workers = [fetcher(log, environment) for log in logs]
        for worker, log in zip(workers, logs, strict=True):
            assert worker.stdout is not None
            assert worker.stdout.readline() == "ready\n", log.read_text()[-3000:]
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()

        def under_way() -> int:
            asked = sum(1 for request in hub.requests if request.startswith(f"GET /api/models/{REPO}"))
            waiting = sum(log.read_text().count(f"Waiting for {REPO}") for log in logs)
            return asked + waiting

        deadline = Deadline(60, "four fetches under way")
        while under_way() < 4:
            deadline.check(hub.requests)
            for worker, log in zip(workers, logs, strict=True):
                assert worker.poll() is None, log.read_text()[-3000:]
            time.sleep(0.05)
        hub.open.set()
        found = []
        for worker, log in zip(workers, logs, strict=True):
            output, _ = worker.communicate(timeout=120)
            assert worker.returncode == 0, log.read_text()[-3000:]
            found += json.loads(output)
    assert len(found) == 4, found
    assert len(set(found)) == 1, found  # the same snapshot
    assert Path(found[0], "model.safetensors").read_bytes() == (files / "model.safetensors").read_bytes()
    counts = Counter(hub.requests)
    assert all(count == 1 for count in counts.values()), counts  # one download: no request made twice
    assert {request for request in counts if request.startswith("GET /test")} == {
        f"GET /{REPO}/resolve/{hub.commit(REPO)}/{name}" for name in ("config.json", "vocab.json", "model.safetensors")
    }
