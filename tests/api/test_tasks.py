"""Upload, status, result and delete through the HTTP API, with FakePipeline workers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.api.conftest import AUTH, status, upload, wait_for_status
from tests.conftest import Deadline
from tests.fakes import FAKE_TEXT

SEED_STATUS_FIELDS = {
    "task_id", "status", "progress", "message", "created_at", "started_at", "completed_at", "error", "result",
}  # fmt: skip
# Additive: the upload's name, the audio's length, and the result's warnings and notes.
EXTRA_STATUS_FIELDS = {"file_name", "duration", "warnings", "notes"}


def _utc(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    offset = parsed.utcoffset()
    assert offset is not None, value
    assert offset.total_seconds() == 0, value
    return parsed


def test_upload_returns_task_id_at_once_with_location(client: TestClient, short_speech: Path) -> None:
    with short_speech.open("rb") as audio:
        response = client.post("/api/v1/transcribe/upload", headers=AUTH, files={"file": audio})
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"task_id", "status", "message"}
    assert body["status"] == "pending"
    assert response.headers["location"] == f"/api/v1/transcribe/status/{body['task_id']}"


def test_task_runs_to_completion_with_seed_fields(client: TestClient, short_speech: Path) -> None:
    task_id = upload(client, short_speech, language="en")["task_id"]
    done = wait_for_status(client, task_id, {"completed"})
    assert set(done) == SEED_STATUS_FIELDS | EXTRA_STATUS_FIELDS
    assert done["progress"] == 100.0
    assert done["error"] is None
    assert _utc(done["created_at"]) <= _utc(done["started_at"]) <= _utc(done["completed_at"])
    assert done["result"]["segments"][0]["text"] == FAKE_TEXT

    result = client.get(f"/api/v1/transcribe/result/{task_id}", headers=AUTH)
    assert result.status_code == 200
    body = result.json()
    assert body["language"] == "en"
    segment = body["segments"][0]
    # The seed's fields, plus the additive `chars` (null unless asked for), `language` (null unless
    # `multilingual`) and `timed`.
    assert set(segment) == {"start", "end", "text", "speaker", "words", "chars", "language"}
    assert segment["chars"] is None
    assert segment["language"] is None
    assert set(segment["words"][0]) == {"word", "start", "end", "score", "speaker", "timed"}
    assert segment["words"][0]["timed"] is True


def test_progress_rises_through_named_stages_and_never_falls(
    make_client: Callable[..., TestClient], short_speech: Path
) -> None:
    client = make_client({"FAKE_STEP_SECONDS": "0.05"})
    task_id = upload(client, short_speech)["task_id"]
    seen: list[dict[str, Any]] = []
    deadline = Deadline(60, f"task {task_id} to finish")
    while not seen or seen[-1]["status"] not in ("completed", "failed"):
        deadline.check(seen[-1:])
        seen.append(status(client, task_id))
    assert seen[-1]["status"] == "completed"
    progress = [doc["progress"] for doc in seen]
    assert progress == sorted(progress)
    assert len(set(progress)) > 10, "progress should move in many steps, not jump"
    messages = [doc["message"] for doc in seen if doc["status"] == "processing" and doc["message"] != "Starting"]
    assert list(dict.fromkeys(messages)) == [
        "Decoding audio",
        "Transcribing speech",
        "Timing words",
        "Identifying speakers",
        "Assigning speakers to words",
    ]


def test_without_diarization_the_speaker_stages_are_skipped(
    make_client: Callable[..., TestClient], short_speech: Path
) -> None:
    client = make_client({"FAKE_STEP_SECONDS": "0.05"})
    task_id = upload(client, short_speech, enable_diarization="false")["task_id"]
    seen = [status(client, task_id)]
    deadline = Deadline(60, f"task {task_id} to complete")
    while seen[-1]["status"] != "completed":
        deadline.check(seen[-1])
        seen.append(status(client, task_id))
    assert "Identifying speakers" not in {doc["message"] for doc in seen}
    # The skipped stages' share is spread over the others: the last stage ends near 100.
    assert max(doc["progress"] for doc in seen if doc["status"] == "processing") > 95


def test_result_of_unfinished_task_is_409(make_client: Callable[..., TestClient], short_speech: Path) -> None:
    client = make_client({"FAKE_STEP_SECONDS": "0.2"})
    task_id = upload(client, short_speech)["task_id"]
    response = client.get(f"/api/v1/transcribe/result/{task_id}", headers=AUTH)
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"].startswith(f"Task {task_id} is p")  # pending or processing


def test_failed_task_reports_its_error(make_client: Callable[..., TestClient], short_speech: Path) -> None:
    client = make_client({"FAKE_MODE": "fail"})
    task_id = upload(client, short_speech)["task_id"]
    failed = wait_for_status(client, task_id, {"failed"})
    assert failed["error"] == "The fake pipeline was told to fail."
    assert failed["result"] is None
    assert failed["completed_at"] is not None
    response = client.get(f"/api/v1/transcribe/result/{task_id}", headers=AUTH)
    assert response.status_code == 409
    assert "failed" in response.json()["detail"]


def test_unknown_task_is_404_everywhere(client: TestClient) -> None:
    for method, path in [
        ("GET", "/api/v1/transcribe/status/nope"),
        ("GET", "/api/v1/transcribe/result/nope"),
        ("DELETE", "/api/v1/transcribe/task/nope"),
    ]:
        response = client.request(method, path, headers=AUTH)
        assert response.status_code == 404
        assert "No task with id 'nope'" in response.json()["detail"]
