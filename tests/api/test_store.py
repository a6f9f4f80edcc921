"""One behaviour suite for every TaskStore: the in-memory default and TASK_STORE=sqlite."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from app.pipeline.base import Job, Stage
from app.tasks.models import Task, TaskStatus, utcnow
from app.tasks.sqlite_store import SqliteTaskStore
from app.tasks.store import MemoryTaskStore, TaskStore


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> TaskStore:
    if request.param == "sqlite":
        return SqliteTaskStore(tmp_path / "tasks.db")
    return MemoryTaskStore()


def _task(task_id: str, owner: str = "alice", minutes_ago: int = 0, **changes: object) -> Task:
    job = Job(task_id=task_id, audio_path=Path("/uploads") / task_id, language="en", min_speakers=1, max_speakers=3)
    task = Task(job=job, owner=owner, created_at=utcnow() - timedelta(minutes=minutes_ago))
    for name, value in changes.items():
        setattr(task, name, value)
    return task


def test_a_task_comes_back_exactly_as_stored(store: TaskStore) -> None:
    task = _task("a", status=TaskStatus.PROCESSING, progress=42.5, stage=Stage.DIARIZE, started_at=utcnow())
    store.add(task)
    assert store.get("a") == task
    assert store.get("missing") is None


def test_update_applies_changes_and_misses_deleted_tasks(store: TaskStore) -> None:
    store.add(_task("a"))
    result = {"language": "en", "segments": [{"start": 0.0, "end": 1.0, "text": "hi", "words": []}]}
    done = store.update("a", status=TaskStatus.COMPLETED, progress=100.0, result=result, completed_at=utcnow())
    assert done is not None
    assert store.get("a") == done
    assert done.result == result
    assert store.delete("a") == done
    assert store.delete("a") is None
    assert store.update("a", progress=1.0) is None


def test_counts_pages_and_recovery_queries(store: TaskStore) -> None:
    now = utcnow()
    store.add(_task("old-done", minutes_ago=50, status=TaskStatus.COMPLETED, completed_at=now - timedelta(minutes=40)))
    store.add(_task("new-failed", minutes_ago=30, status=TaskStatus.FAILED, completed_at=now - timedelta(minutes=1)))
    store.add(_task("running", minutes_ago=20, status=TaskStatus.PROCESSING))
    store.add(_task("waiting", minutes_ago=10))
    store.add(_task("bobs", owner="bob", minutes_ago=5))

    assert store.count_by_status() == {
        TaskStatus.COMPLETED: 1, TaskStatus.FAILED: 1, TaskStatus.PROCESSING: 1, TaskStatus.PENDING: 2,
    }  # fmt: skip
    assert store.count_active("alice") == 2
    assert store.count_active("bob") == 1
    assert store.count_active("carol") == 0

    page, total = store.page("alice", None, limit=2, offset=0)
    assert ([task.id for task in page], total) == (["waiting", "running"], 4)
    page, total = store.page("alice", None, limit=2, offset=2)
    assert [task.id for task in page] == ["new-failed", "old-done"]
    page, total = store.page("alice", TaskStatus.PENDING, limit=10, offset=0)
    assert ([task.id for task in page], total) == (["waiting"], 1)

    assert [task.id for task in store.unfinished()] == ["running", "waiting", "bobs"]
    assert [task.id for task in store.ended_before(now - timedelta(minutes=10))] == ["old-done"]


def test_sqlite_tasks_outlive_the_store_object(tmp_path: Path) -> None:
    first = SqliteTaskStore(tmp_path / "tasks.db")
    first.add(_task("a"))
    first.update("a", status=TaskStatus.PROCESSING, progress=12.0, stage=Stage.TRANSCRIBE)
    reopened = SqliteTaskStore(tmp_path / "tasks.db")
    assert reopened.get("a") == first.get("a")
    assert reopened.unfinished()[0].progress == 12.0
