"""UPLOAD_DIR upkeep: uploads a crash orphaned are swept at start, and a full disk answers 507."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.keys import hashed_key_id
from app.pipeline.base import Job
from app.tasks.models import Task, TaskStatus
from app.tasks.sqlite_store import SqliteTaskStore
from tests.api.conftest import API_KEY, AUTH, make_settings, upload
from tests.conftest import ffmpeg


def _file(directory: Path, name: str, hours_old: float) -> Path:
    path = directory / name
    path.write_bytes(b"audio")
    then = time.time() - hours_old * 3600
    os.utime(path, (then, then))
    return path


def test_start_sweeps_old_uploads_no_task_refers_to(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    settings = make_settings(tmp_path, task_store="sqlite")
    uploads = settings.upload_dir
    uploads.mkdir()
    orphan = _file(uploads, str(uuid.uuid4()), hours_old=3)
    young = _file(uploads, str(uuid.uuid4()), hours_old=0.1)  # another process may be about to record it
    kept_name = str(uuid.uuid4())
    kept = _file(uploads, kept_name, hours_old=3)
    others = [_file(uploads, "tasks.db", hours_old=3), _file(uploads, f"{uuid.uuid4()}.part", hours_old=3)]
    store = SqliteTaskStore(settings.task_db_file, uploads)
    job = Job(task_id=kept_name, audio_path=kept)
    store.add(Task(job=job, owner=hashed_key_id(API_KEY), status=TaskStatus.COMPLETED))

    make_client(task_store="sqlite")

    assert not orphan.exists()
    assert young.exists()
    assert kept.exists()
    assert all(path.exists() for path in others), "only files named like uploads are swept"


def test_an_in_memory_run_sweeps_what_a_crashed_one_left(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    left = [_file(uploads, str(uuid.uuid4()), hours_old=2) for _ in range(3)]
    make_client()
    assert not any(path.exists() for path in left)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs: a real file system that fills up."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_answers_507_and_keeps_nothing(
    make_client: Callable[..., TestClient], small_disk: Path, tmp_path: Path, short_speech: Path
) -> None:
    big = tmp_path / "big.wav"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=40", "-ar", "16000", "-ac", "1", str(big))
    assert big.stat().st_size > 1024 * 1024
    client = make_client(upload_dir=small_disk / "uploads")
    with big.open("rb") as audio:
        refused = client.post("/api/v1/transcribe/upload", headers=AUTH, files={"file": ("big.wav", audio)})
    assert refused.status_code == 507, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert "disk is full" in refused.json()["detail"]
    assert str(small_disk) not in refused.text
    assert list((small_disk / "uploads").iterdir()) == [], "the partial file is removed"
    with big.open("rb") as audio:
        openai = client.post(
            "/v1/audio/transcriptions", headers=AUTH, files={"file": ("big.wav", audio)}, data={"model": "whisper-1"}
        )
    assert openai.status_code == 507, openai.text
    # Space is back once the partial file is gone: a small upload goes through.
    upload(client, short_speech)
