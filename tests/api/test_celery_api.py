"""TASK_BACKEND=celery, API side, on a real redis-server with no worker running: two app
instances stand for two API processes. Whatever one accepts, the other reports, limits count
both, deletes and key isolation hold across them, and a change written to Redis by anyone
(as a worker does) reaches the SSE stream."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from app.main import create_app
from app.tasks.models import TaskStatus, utcnow
from app.tasks.redis_store import RedisTaskStore
from tests.api.conftest import AUTH, AudioServer, make_settings, status, upload, wait_for_status, wait_until
from tests.fakes import FakePipeline

OTHER = {"X-API-Key": "second-key"}


@pytest.fixture
def api(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    url = re.sub(r"/\d+$", "/2", redis_url)  # a database of its own, emptied for each test
    redis.Redis.from_url(url).flushdb()
    opened: list[TestClient] = []

    def open_api(**settings: Any) -> TestClient:
        app = create_app(make_settings(tmp_path, task_backend="celery", redis_url=url, **settings), FakePipeline)
        client = TestClient(app)
        client.__enter__()
        opened.append(client)
        return client

    yield open_api
    for client in opened:
        client.__exit__(None, None, None)


def test_any_api_process_serves_any_task(api: Callable[..., TestClient], short_speech: Path, tmp_path: Path) -> None:
    first, second = api(), api()
    task_id = upload(first, short_speech)["task_id"]
    doc = second.get(f"/api/v1/transcribe/status/{task_id}", headers=AUTH).json()
    assert (doc["status"], doc["progress"]) == ("pending", 0.0)
    assert second.get(f"/api/v1/transcribe/status/{task_id}", headers=OTHER).status_code == 404
    assert second.delete(f"/api/v1/transcribe/task/{task_id}", headers=OTHER).status_code == 404
    assert second.get("/api/v1/transcribe/tasks", headers=AUTH).json()["total"] == 1
    assert second.delete(f"/api/v1/transcribe/task/{task_id}", headers=AUTH).status_code == 200
    assert first.get(f"/api/v1/transcribe/status/{task_id}", headers=AUTH).status_code == 404
    assert list((tmp_path / "uploads").iterdir()) == [], "the deleted task's upload is removed"


def test_limits_count_the_tasks_of_every_api_process(api: Callable[..., TestClient], short_speech: Path) -> None:
    first, second = api(max_tasks_per_key=2), api(max_tasks_per_key=2)
    upload(first, short_speech)
    upload(second, short_speech)
    with short_speech.open("rb") as audio:
        refused = first.post("/api/v1/transcribe/upload", headers=AUTH, files={"file": ("a.wav", audio)})
    assert refused.status_code == 429, refused.text
    assert "MAX_TASKS_PER_KEY" in refused.json()["detail"]
    with short_speech.open("rb") as audio:
        other = second.post("/api/v1/transcribe/upload", headers=OTHER, files={"file": ("a.wav", audio)})
    assert other.status_code == 202, "another key has limits of its own"


def test_store_changes_reach_the_event_stream(api: Callable[..., TestClient], short_speech: Path) -> None:
    client = api()
    task_id = upload(client, short_speech)["task_id"]
    store = RedisTaskStore(client.app.state.store.engine.client, client.app.state.settings.upload_dir)  # type: ignore[attr-defined]
    with client.stream("GET", f"/api/v1/transcribe/events/{task_id}", headers=AUTH) as stream:
        lines = stream.iter_lines()
        assert next(line for line in lines if line.startswith("event:")) == "event: pending"
        # Written as a worker writes it: to Redis, from another connection.
        store.update(task_id, status=TaskStatus.PROCESSING, progress=40.0, message="Transcribing speech")
        assert next(line for line in lines if line.startswith("event:")) == "event: processing"
        store.update(task_id, status=TaskStatus.FAILED, error="test failure", message="Transcription failed")
        assert next(line for line in lines if line.startswith("event:")) == "event: failed"
    metrics = wait_until(lambda: 'whisperx_tasks_finished_total{status="failed"} 1.0' in _metrics(client))
    assert metrics
    # No worker has announced itself: the API says so rather than claiming models are loaded.
    health = client.get("/health", headers=AUTH).json()
    assert (health["status"], health["model_loaded"]) == ("loading", False)


def _metrics(client: TestClient) -> str:
    return client.get("/metrics", headers=AUTH).text


def test_audio_url_is_downloaded_by_the_api_then_queued(
    api: Callable[..., TestClient], audio_server: AudioServer, tmp_path: Path
) -> None:
    """The API process fetches audio_url (workers need not reach the caller's URL), then sends the task."""
    client = api(audio_url_allow_private=True)
    form = {"audio_url": audio_server.url("/speech.wav")}
    task_id = client.post("/api/v1/transcribe/upload", headers=AUTH, data=form).json()["task_id"]
    doc = wait_until(lambda: (d := status(client, task_id))["message"] == "Waiting in the queue" and d)
    assert doc["status"] == "pending"
    assert doc["progress"] > 0, "the download's share of progress is kept"
    task = client.app.state.store.engine.get(task_id)  # type: ignore[attr-defined]
    assert task.job.duration, "probed once downloaded"
    assert task.job.audio_path.read_bytes() == audio_server.audio

    failed = client.post("/api/v1/transcribe/upload", headers=AUTH, data={"audio_url": audio_server.url("/page")})
    done = wait_for_status(client, failed.json()["task_id"], {"failed"})
    assert "returned a web page (text/html), not audio" in done["error"]
    assert sorted(path.name for path in (tmp_path / "uploads").iterdir()) == [task.job.audio_path.name]


def test_live_sessions_are_refused_at_the_upgrade_naming_the_setting(api: Callable[..., TestClient]) -> None:
    client = api()
    with (
        pytest.raises(WebSocketDenialResponse) as refused,
        # A copy: the test client adds the upgrade headers to the dict it is given.
        client.websocket_connect("/v1/realtime?intent=transcription", headers=dict(AUTH)),
    ):
        pass
    assert refused.value.status_code == 503
    assert "TASK_BACKEND=local" in refused.value.json()["detail"]


def test_renaming_speakers_is_no_second_end(api: Callable[..., TestClient], short_speech: Path) -> None:
    """A rename edits an ended task's result: not counted as a second finish, nor sent as one (as locally)."""
    client = api()
    store = RedisTaskStore(client.app.state.store.engine.client, client.app.state.settings.upload_dir)  # type: ignore[attr-defined]
    renamed, marker = (upload(client, short_speech)["task_id"] for _ in range(2))
    segment = {"start": 0.0, "end": 1.0, "text": "hi", "speaker": "SPEAKER_00", "words": []}
    result = {"language": "en", "segments": [segment], "speakers": [{"speaker": "SPEAKER_00", "seconds": 1.0}]}
    store.update(renamed, status=TaskStatus.COMPLETED, result=result, completed_at=utcnow())
    wait_until(lambda: 'whisperx_tasks_finished_total{status="completed"} 1.0' in _metrics(client))
    answer = client.patch(f"/api/v1/transcribe/tasks/{renamed}/speakers", headers=AUTH, json={"SPEAKER_00": "Ann"})
    assert answer.status_code == 200, answer.text
    # A change after the rename: once it is counted, the rename would have been too.
    store.update(marker, status=TaskStatus.FAILED, error="test failure", completed_at=utcnow())
    wait_until(lambda: 'whisperx_tasks_finished_total{status="failed"} 1.0' in _metrics(client))
    assert 'whisperx_tasks_finished_total{status="completed"} 1.0' in _metrics(client)
