"""Uploads on disk: private to the service's user, and only ever touched inside UPLOAD_DIR."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import starlette.formparsers
from fastapi.testclient import TestClient

from app.config import Settings
from app.keys import hashed_key_id
from app.main import create_app
from app.ops.telemetry import SWITCHES
from app.pipeline.base import Job
from app.tasks.codec import to_record
from app.tasks.models import Task, TaskStatus, utcnow
from app.tasks.sqlite_store import SqliteTaskStore
from tests.api.conftest import API_KEY, AUTH, make_settings, upload, wait_until
from tests.conftest import ffmpeg
from tests.fakes import FakePipeline


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_upload_dir_and_files_are_private(
    make_client: Callable[..., TestClient], short_speech: Path, tmp_path: Path
) -> None:
    # A permissive umask and an existing world-readable directory: the service tightens both.
    (tmp_path / "uploads").mkdir(mode=0o755)
    previous = os.umask(0o022)
    try:
        client = make_client({"FAKE_STEP_SECONDS": "0.5"})
        upload(client, short_speech)
        uploads = tmp_path / "uploads"
        assert mode(uploads) == 0o700
        stored = wait_until(lambda: list(uploads.iterdir()))
        assert [mode(path) for path in stored] == [0o600]
    finally:
        os.umask(previous)


def test_data_dir_and_database_are_private_even_when_they_exist(tmp_path: Path) -> None:
    """DATA_DIR and the database of tasks and voices, left world-readable by an earlier version or a
    permissive umask, are tightened at start; the database's journal takes its mode."""
    settings = make_settings(tmp_path, task_store="sqlite")
    settings.data_dir.mkdir(mode=0o755)
    settings.task_db_file.touch(mode=0o644)  # an empty file is an empty SQLite database
    os.chmod(settings.task_db_file, 0o644)
    previous = os.umask(0o022)
    try:
        with TestClient(create_app(settings, FakePipeline)) as client:
            enrolled = client.delete("/api/v1/speakers", headers=AUTH)  # a write to the voices table
            assert enrolled.status_code == 200, enrolled.text
            assert mode(settings.data_dir) == 0o700
            files = sorted(settings.data_dir.iterdir())
            assert [path.name for path in files] == ["tasks.db", "tasks.db-shm", "tasks.db-wal"]
            assert [mode(path) for path in files] == [0o600] * 3
    finally:
        os.umask(previous)


def test_sqlite_database_lives_outside_upload_dir_unless_told(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, task_store="sqlite")
    assert settings.task_db_file == tmp_path / "data" / "tasks.db"
    assert not settings.task_db_file.is_relative_to(settings.upload_dir)
    explicit = make_settings(tmp_path, task_store="sqlite", task_db_path=tmp_path / "elsewhere.db")
    assert explicit.task_db_file == tmp_path / "elsewhere.db"
    unset = Settings(_env_file=None, upload_dir=tmp_path / "u")  # type: ignore[call-arg]
    assert unset.task_db_file.parent.name == "whisperx-api"
    assert not unset.task_db_file.is_relative_to(unset.upload_dir)


def _tampered(task_id: str, audio_path: Path, **changes: object) -> dict[str, object]:
    # Owned by the test's key: were the record loaded, its DELETE would succeed.
    task = Task(job=Job(task_id=task_id, audio_path=audio_path), owner=hashed_key_id(API_KEY), **changes)  # type: ignore[arg-type]
    return to_record(task)


def test_a_tampered_record_never_touches_files_outside_upload_dir(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Records pointing outside UPLOAD_DIR, as someone with write access to the database could
    plant them: a pending one (recovery on start), an expired one (retention deletes its file),
    one reached through `..`, and one pointing at another task's upload. The service starts, serves,
    expires, and leaves the files alone."""
    settings = make_settings(tmp_path, task_store="sqlite", task_ttl_hours=0.001)
    uploads = settings.upload_dir
    uploads.mkdir()
    # The fourth is another task's upload inside UPLOAD_DIR.
    victims = [tmp_path / "victim-1", tmp_path / "victim-2", tmp_path / "victim-3", uploads / "someone-elses-task"]
    for victim in victims:
        victim.write_text("not yours")
    long_ago = utcnow() - timedelta(days=1)
    records = [
        _tampered("pending", victims[0]),
        _tampered("expired", victims[1], status=TaskStatus.COMPLETED, completed_at=long_ago, created_at=long_ago),
        _tampered("dotdot", uploads / ".." / "victim-3", status=TaskStatus.FAILED, completed_at=long_ago),
        _tampered("borrowed", victims[3], status=TaskStatus.FAILED, completed_at=long_ago),
    ]
    SqliteTaskStore(settings.task_db_file, uploads)  # creates the table
    with sqlite3.connect(settings.task_db_file) as db:
        for record in records:
            columns = ", ".join(record)
            db.execute(f"INSERT INTO tasks ({columns}) VALUES ({', '.join('?' * len(record))})", list(record.values()))  # noqa: S608

    with TestClient(create_app(settings, FakePipeline)) as client:
        wait_until(lambda: client.get("/health", headers=AUTH).json()["model_loaded"])
        for task_id in ("pending", "expired", "dotdot", "borrowed"):
            assert client.delete(f"/api/v1/transcribe/task/{task_id}", headers=AUTH).status_code == 404
        wait_until(lambda: "points outside UPLOAD_DIR" in caplog.text and "an upload not its own" in caplog.text)
    assert all(victim.read_text() == "not yours" for victim in victims)
    with sqlite3.connect(settings.task_db_file) as db:
        assert json.loads(db.execute("SELECT job FROM tasks WHERE id = 'pending'").fetchone()[0])["audio_path"] == str(
            victims[0]
        )


def test_the_app_turns_library_telemetry_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "0")
    monkeypatch.setenv("PYANNOTE_METRICS_ENABLED", "true")
    create_app(make_settings(tmp_path), FakePipeline)
    assert {name: os.environ[name] for name in SWITCHES} == {
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "PYANNOTE_METRICS_ENABLED": "false",
    }


def test_an_upload_is_written_once_straight_into_upload_dir(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing goes through Starlette's spool files: the part's bytes land in UPLOAD_DIR as they arrive."""
    spooled: list[int] = []

    class CountingSpool(tempfile.SpooledTemporaryFile):  # type: ignore[type-arg]
        def write(self, data: bytes) -> int:  # type: ignore[override]
            spooled.append(len(data))
            return super().write(data)

    monkeypatch.setattr(starlette.formparsers, "SpooledTemporaryFile", CountingSpool)
    audio = tmp_path / "long.wav"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:duration=90", "-ar", "16000", "-ac", "1", str(audio))
    with audio.open("rb") as body:
        answer = client.post("/api/v1/transcribe/upload", headers=AUTH, files={"file": ("long.wav", body)})
    assert answer.status_code == 202, answer.text
    stored = client.app.state.store.engine.get(answer.json()["task_id"]).job.audio_path  # type: ignore[attr-defined]
    assert stored.parent == tmp_path / "uploads"
    assert stored.read_bytes() == audio.read_bytes()
    assert sum(spooled) == 0


def test_a_refused_upload_leaves_no_file(client: TestClient, short_speech: Path, tmp_path: Path) -> None:
    for form in ({"min_speakers": "0"}, {"language": "klingon"}, {"callback_url": "http://127.0.0.1/x"}):
        with short_speech.open("rb") as body:
            answer = client.post("/api/v1/transcribe/upload", headers=AUTH, files={"file": body}, data=form)
        assert answer.status_code == 422, form
    not_audio = client.post("/api/v1/transcribe/upload", headers=AUTH, files={"file": ("a.txt", b"just text")})
    assert not_audio.status_code == 415
    assert list((tmp_path / "uploads").iterdir()) == []
