"""TASK_STORE=sqlite on the real model: `python -m app.main` is killed with SIGKILL (with its
worker) while transcribing, started again, and every task still ends completed, transcribed."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT
from tests.real.conftest import API_KEY, AUTH, normalise

# Its own port (not the shared server's), so both can run; REAL_TIER_RESTART_PORT moves it.
PORT = int(os.environ.get("REAL_TIER_RESTART_PORT", "8103"))
URL = f"http://127.0.0.1:{PORT}"


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Any]:
    started: list[subprocess.Popen[bytes]] = []
    env = {
        **os.environ,
        "API_KEYS": API_KEY,
        "HOST": "127.0.0.1",
        "PORT": str(PORT),
        "UPLOAD_DIR": str(tmp_path / "uploads"),
        "DATA_DIR": str(tmp_path / "data"),
        "TASK_STORE": "sqlite",
        "MAX_CONCURRENT_TASKS": "1",
        "BATCH_SIZE": "1",
    }
    env.pop("WHISPER_MODEL", None)

    def start() -> subprocess.Popen[bytes]:
        log = (tmp_path / f"server-{len(started)}.log").open("wb")
        command = [sys.executable, "-m", "app.main"]
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)
        started.append(process)
        deadline = time.monotonic() + 300
        while not _loaded():
            assert process.poll() is None, (tmp_path / f"server-{len(started) - 1}.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the server did not load its model"
            time.sleep(0.5)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
            process.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def _loaded() -> bool:
    try:
        return bool(httpx.get(f"{URL}/health", headers=AUTH, timeout=2).json().get("model_loaded"))
    except httpx.TransportError:
        return False


def _status(task_id: str) -> dict[str, Any]:
    response = httpx.get(f"{URL}/api/v1/transcribe/status/{task_id}", headers=AUTH, timeout=5)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_kill_9_while_transcribing_then_restart_completes_every_task(
    start_service: Any, long_speech: Path, known_speech: Path
) -> None:
    first = start_service()
    ids = []
    for path in (long_speech, known_speech):
        with path.open("rb") as audio:
            response = httpx.post(f"{URL}/api/v1/transcribe/upload", headers=AUTH, files={"file": audio}, timeout=30)
        assert response.status_code == 202, response.text
        ids.append(response.json()["task_id"])

    deadline = time.monotonic() + 120
    while (doc := _status(ids[0]))["message"] != "Transcribing speech" or doc["progress"] < 5:
        assert time.monotonic() < deadline, doc
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)

    start_service()
    for task_id in ids:
        deadline = time.monotonic() + 300
        while (doc := _status(task_id))["status"] not in ("completed", "failed"):
            assert time.monotonic() < deadline, doc
            time.sleep(0.2)
        assert doc["status"] == "completed", doc
        assert "the weather is warm" in normalise(" ".join(s["text"] for s in doc["result"]["segments"]))
