"""TASK_STORE=sqlite: tasks survive a graceful restart and a `kill -9` in mid-transcription.

The crash test runs the service as a real process on FakePipeline: recovery is the manager's
and the store's work, independent of the model, and the fake's fixed step time makes "killed
while a task is processing" certain within a few seconds on a 2-core CI machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from tests.api.conftest import AUTH, status, upload, wait_for_status, wait_until

PORT = 8101  # this suite's servers use 8100-8109 on loopback
BASE = f"http://127.0.0.1:{PORT}"


def test_sqlite_store_serves_the_whole_flow(make_client: Callable[..., TestClient], short_speech: Path) -> None:
    client = make_client(task_store="sqlite")
    task_id = upload(client, short_speech, language="en")["task_id"]
    done = wait_for_status(client, task_id, {"completed"})
    assert done["progress"] == 100.0
    assert client.get(f"/api/v1/transcribe/result/{task_id}", headers=AUTH).json()["language"] == "en"
    assert client.get("/api/v1/transcribe/tasks", headers=AUTH).json()["total"] == 1


def _status(task_id: str) -> dict[str, Any]:
    response = httpx.get(f"{BASE}/api/v1/transcribe/status/{task_id}", headers=AUTH, timeout=5)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_kill_9_mid_transcription_loses_no_task(
    serve: Callable[..., subprocess.Popen[bytes]], short_speech: Path, tmp_path: Path
) -> None:
    def service() -> subprocess.Popen[bytes]:
        return serve(PORT, TASK_STORE="sqlite", FAKE_STEP_SECONDS="0.06")

    first_run = service()
    ids = []
    for _ in range(4):
        with short_speech.open("rb") as audio:
            response = httpx.post(f"{BASE}/api/v1/transcribe/upload", headers=AUTH, files={"file": audio}, timeout=10)
        assert response.status_code == 202, response.text
        ids.append(response.json()["task_id"])
    wait_until(lambda: _status(ids[0])["progress"] > 20, timeout=20)

    os.killpg(first_run.pid, signal.SIGKILL)  # the service and its worker, mid-transcription
    first_run.wait(10)
    # One upload goes missing while the service is down: that task must fail with a reason.
    lost = ids[-1]
    (tmp_path / "uploads" / lost).unlink()

    service()
    final = {task_id: wait_until(lambda t=task_id: _ended(t), timeout=60) for task_id in ids}
    for task_id in ids[:-1]:
        assert final[task_id]["status"] == "completed", final[task_id]
        result = httpx.get(f"{BASE}/api/v1/transcribe/result/{task_id}", headers=AUTH, timeout=5)
        assert result.status_code == 200
    assert final[lost]["status"] == "failed"
    assert final[lost]["error"] == "The server restarted and this task's upload was lost; upload the file again."
    assert list((tmp_path / "uploads").glob("*-*-*")) == [], "uploads are deleted once their tasks end"


def _ended(task_id: str) -> dict[str, Any] | None:
    doc = _status(task_id)
    return doc if doc["status"] in ("completed", "failed") else None


def test_graceful_restart_requeues_waiting_tasks(
    make_client: Callable[..., TestClient], short_speech: Path, tmp_path: Path
) -> None:
    client = make_client({"FAKE_STEP_SECONDS": "0.1"}, task_store="sqlite")
    ids = [upload(client, short_speech)["task_id"] for _ in range(2)]
    wait_for_status(client, ids[0], {"processing"})
    client.__exit__(None, None, None)  # shutdown with one task running and one waiting

    again = make_client({"FAKE_STEP_SECONDS": "0.01"}, task_store="sqlite")
    for task_id in ids:
        assert wait_for_status(again, task_id, {"completed"})["progress"] == 100.0
    assert status(again, ids[0])["error"] is None
