"""A task store that fails a write now and then (a full disk, a locked database): the task it hit ends
`failed` once the store answers again, and the service goes on; nothing stays moving for good."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from app.pipeline.base import Stage
from app.tasks.lifecycle import PREPARE_ERROR
from app.tasks.manager import STORE_FAILED
from app.tasks.models import TaskStatus
from tests.api.conftest import AUTH, AudioServer, upload, wait_for_status


def _fail_writes(client: TestClient, times: int, when: Callable[[dict[str, Any]], bool]) -> list[str]:
    """Make the store's next `times` updates matching `when` raise; returns the ids of the tasks they hit."""
    store = client.app.state.store.engine  # type: ignore[attr-defined]
    update = store.update
    hit: list[str] = []

    def flaky(task_id: str, **changes: Any) -> Any:
        if len(hit) < times and when(changes):
            hit.append(task_id)
            raise OSError("disk I/O error")
        return update(task_id, **changes)

    store.update = flaky
    return hit


def test_a_store_error_mid_task_fails_that_task_and_the_slot_goes_on(
    make_client: Callable[..., TestClient], short_speech: Path
) -> None:
    client = make_client()
    # The first transcription progress write, and the first try to record the failure, meet a store error.
    hit = _fail_writes(
        client,
        2,
        lambda changes: changes.get("stage") is Stage.TRANSCRIBE or changes.get("status") is TaskStatus.FAILED,
    )
    first = upload(client, short_speech)["task_id"]
    second = upload(client, short_speech)["task_id"]
    failed = wait_for_status(client, first, {"failed", "completed"}, timeout=30)
    assert hit == [first, first]
    assert (failed["status"], failed["error"]) == ("failed", STORE_FAILED)
    assert wait_for_status(client, second, {"failed", "completed"}, timeout=30)["status"] == "completed", (
        "the slot took the next task"
    )
    assert client.get("/health", headers=AUTH).json()["queue"] == {"pending": 0, "processing": 0}


def test_a_store_error_during_a_download_fails_the_task(
    make_client: Callable[..., TestClient], audio_server: AudioServer
) -> None:
    client = make_client(audio_url_allow_private=True)
    # The download's progress write and the failure written in its place both meet the error at first.
    hit = _fail_writes(
        client, 2, lambda changes: changes.get("stage") is Stage.DOWNLOAD or changes.get("status") is TaskStatus.FAILED
    )
    answer = client.post("/api/v1/transcribe/upload", headers=AUTH, data={"audio_url": audio_server.url("/speech.wav")})
    task_id = answer.json()["task_id"]
    done = wait_for_status(client, task_id, {"failed", "completed"}, timeout=30)
    assert hit == [task_id, task_id]
    assert (done["status"], done["error"]) == ("failed", PREPARE_ERROR)
    assert list(client.app.state.settings.upload_dir.iterdir()) == []  # type: ignore[attr-defined]
