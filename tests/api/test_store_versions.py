"""Records written by the previous schema still load, and a record pointing outside UPLOAD_DIR
is never acted on."""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import fields
from pathlib import Path

import redis

from app.pipeline.base import Job, Stage
from app.tasks.codec import SCHEMA_VERSION, from_record, to_record
from app.tasks.models import Task, TaskStatus
from app.tasks.redis_store import RedisTaskStore
from app.tasks.sqlite_store import SqliteTaskStore

# The table and a completed task's record exactly as version 1 wrote them: no schema_version,
# and a job from before audio_url, return_char_alignments, suppress_numerals, chunk_size,
# vad_onset/vad_offset, beam_size, hotwords and task existed.
VERSION_1_TABLE = """
CREATE TABLE tasks (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, status TEXT NOT NULL, progress REAL NOT NULL, stage TEXT,
    message TEXT NOT NULL, created_at TEXT NOT NULL, started_at TEXT, completed_at TEXT, error TEXT,
    result TEXT, job TEXT NOT NULL
);
"""


def version_1_record(upload_dir: Path) -> dict[str, str | float | None]:
    job = {
        "task_id": "old-task", "audio_path": str(upload_dir / "old-task"), "language": "en", "min_speakers": None,
        "max_speakers": 2, "enable_diarization": True, "initial_prompt": None, "temperature": None,
        "duration": 12.5, "callback_url": None,
    }  # fmt: skip
    return {
        "id": "old-task", "owner": "3f2a9c0d1e4b5a6c", "status": "completed", "progress": 100.0, "stage": None,
        "message": "Transcription completed", "created_at": "2026-11-20T10:00:00.000000+00:00",
        "started_at": "2026-11-20T10:00:01.500000+00:00", "completed_at": "2026-11-20T10:00:30.250000+00:00",
        "error": None, "result": json.dumps({"text": "hello", "segments": []}), "job": json.dumps(job),
    }  # fmt: skip


def check_version_1_task(task: Task | None, upload_dir: Path) -> None:
    assert task is not None
    assert (task.id, task.owner, task.status, task.progress) == ("old-task", "3f2a9c0d1e4b5a6c", "completed", 100.0)
    assert task.job.audio_path == upload_dir / "old-task"
    assert (task.job.max_speakers, task.job.duration) == (2, 12.5)
    # Fields the old record lacks take their defaults.
    assert (task.job.audio_url, task.job.task, task.job.beam_size, task.job.suppress_numerals) == (
        None, "transcribe", None, False,
    )  # fmt: skip
    assert task.completed_at is not None
    assert task.completed_at.isoformat() == "2026-11-20T10:00:30.250000+00:00"
    assert task.result == {"text": "hello", "segments": []}


def test_sqlite_opens_a_version_1_database(tmp_path: Path) -> None:
    path, uploads = tmp_path / "tasks.db", tmp_path / "uploads"
    with sqlite3.connect(path) as old:
        old.executescript(VERSION_1_TABLE)
        record = version_1_record(uploads)
        old.execute("INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", list(record.values()))

    store = SqliteTaskStore(path, uploads)
    check_version_1_task(store.get("old-task"), uploads)
    assert [task.id for task in store.page("3f2a9c0d1e4b5a6c", TaskStatus.COMPLETED, 10, 0)[0]] == ["old-task"]
    # Written again, it carries the current version.
    store.update("old-task", message="touched")
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT schema_version FROM tasks").fetchone() == (SCHEMA_VERSION,)


def test_redis_reads_a_version_1_hash(redis_url: str, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    prefix = f"test-{uuid.uuid4().hex}:"
    record = version_1_record(tmp_path)
    # Version 1 left out None fields and kept a write counter.
    client.hset(f"{prefix}task:old-task", mapping={k: v for k, v in record.items() if v is not None} | {"version": 3})
    store = RedisTaskStore(client, tmp_path, prefix=prefix)
    check_version_1_task(store.get("old-task"), tmp_path)
    assert store.update("old-task", message="touched") is not None
    assert client.hget(f"{prefix}task:old-task", "schema_version") == str(SCHEMA_VERSION)


def test_a_field_with_a_default_needs_no_migration(tmp_path: Path) -> None:
    """A record lacking any defaulted field (as one written before that field existed) loads."""
    task = Task(job=Job(task_id="t", audio_path=tmp_path / "t"), owner="o", stage=Stage.ALIGN, progress=40.0)
    record = to_record(task)
    defaulted = [field.name for field in fields(Task) if field.name not in ("job", "created_at")]
    older = {name: value for name, value in record.items() if name not in defaulted}
    loaded = from_record(older, tmp_path)
    assert (loaded.owner, loaded.status, loaded.stage, loaded.message) == ("", TaskStatus.PENDING, None, Task.message)
    # And a newer writer's unknown fields are ignored.
    job = json.loads(record["job"]) | {"added_later": 1}
    assert from_record(record | {"added_later": "x", "job": json.dumps(job)}, tmp_path) == task
