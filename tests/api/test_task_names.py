"""Tasks keep the uploaded file's name and the audio's length: status, list and download names."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import unquote

import pytest
from fastapi.testclient import TestClient

from app.api.filenames import MAX_NAME_CHARS, attachment, display_name
from app.pipeline.base import Job
from app.tasks.codec import from_record, to_record
from app.tasks.models import Task
from app.tasks.sqlite_store import SqliteTaskStore
from tests.api.conftest import AUTH, status, wait_for_status


def _upload_as(client: TestClient, path: Path, name: str) -> str:
    with path.open("rb") as audio:
        response = client.post("/api/v1/transcribe/upload", headers=AUTH, files={"file": (name, audio)})
    assert response.status_code == 202, response.text
    task_id: str = response.json()["task_id"]
    return task_id


def test_status_and_list_show_the_name_and_length(client: TestClient, short_speech: Path) -> None:
    task_id = _upload_as(client, short_speech, "dialogue.wav")
    wait_for_status(client, task_id, {"completed"})
    document = status(client, task_id)
    assert document["file_name"] == "dialogue.wav"
    assert document["duration"] == pytest.approx(2.4, abs=0.6)  # espeak's "Hello there, this is a short test."
    listed = client.get("/api/v1/transcribe/tasks", headers=AUTH).json()["tasks"]
    assert [(task["task_id"], task["file_name"], task["duration"]) for task in listed] == [
        (task_id, "dialogue.wav", document["duration"])
    ]


def test_downloads_are_named_after_the_upload(client: TestClient, short_speech: Path) -> None:
    task_id = _upload_as(client, short_speech, "Réunion d'équipe.wav")
    wait_for_status(client, task_id, {"completed"})
    response = client.get(f"/api/v1/transcribe/result/{task_id}", headers=AUTH, params={"format": "srt"})
    header = response.headers["content-disposition"]
    assert (
        header == "attachment; filename=\"R_union d'_quipe.srt\"; filename*=UTF-8''R%C3%A9union%20d%27%C3%A9quipe.srt"
    )
    assert unquote(header.rsplit("''", 1)[1]) == "Réunion d'équipe.srt"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("C:\\Users\\ann\\meeting.mp3", "meeting.mp3"),
        ("../../etc/passwd", "passwd"),
        ("two\nlines\r\n\x00.wav", "two lines .wav"),
        ("\x07\x1b[31m", "[31m"),
        ("\u202eevil.wav", "evil.wav"),  # a right-to-left override would reverse what people see
        ("   ", None),
        (None, None),
    ],
)
def test_names_are_cleaned_for_display(raw: str | None, shown: str | None) -> None:
    assert display_name(raw) == shown


def test_long_names_are_cut_keeping_the_extension() -> None:
    name = display_name("x" * 5000 + ".flac")
    assert name is not None
    assert len(name) == MAX_NAME_CHARS
    assert name.endswith("….flac")


def test_without_a_name_the_download_is_named_after_the_task() -> None:
    assert attachment(None, "abc-123", "vtt") == "attachment; filename=\"abc-123.vtt\"; filename*=UTF-8''abc-123.vtt"
    assert attachment('say "hi".wav', "abc", "srt").startswith('attachment; filename="say _hi_.srt"')


def test_a_record_written_before_names_were_kept_still_loads(tmp_path: Path) -> None:
    task = Task(job=Job(task_id="old", audio_path=tmp_path / "old", duration=12.5))
    record = to_record(task)
    old_job = record["job"].replace(', "file_name": null', "")
    assert "file_name" not in old_job
    assert from_record({**record, "job": old_job}, tmp_path).job.file_name is None

    store = SqliteTaskStore(tmp_path / "tasks.db", tmp_path)
    columns = ", ".join(record)
    with sqlite3.connect(tmp_path / "tasks.db") as db:
        db.execute(
            f"INSERT INTO tasks ({columns}) VALUES ({', '.join('?' * len(record))})",  # noqa: S608
            [*{**record, "job": old_job}.values()],
        )
    loaded = store.get("old")
    assert loaded is not None
    assert (loaded.job.file_name, loaded.job.duration) == (None, 12.5)
