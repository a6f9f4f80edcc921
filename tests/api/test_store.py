"""One behaviour suite for every TaskStore: the in-memory default, TASK_STORE=sqlite and the
Redis store of TASK_BACKEND=celery (on a real redis-server)."""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import redis

from app.pipeline.base import Job, Stage
from app.tasks.models import Task, TaskStatus, utcnow
from app.tasks.redis_store import Admission, RedisTaskStore
from app.tasks.sqlite_store import SqliteTaskStore
from app.tasks.store import MemoryTaskStore, TaskStore

UPLOADS = Path("/uploads")


def _redis_store(url: str) -> RedisTaskStore:
    # A prefix of its own per test: tests share the server, never each other's keys.
    return RedisTaskStore(redis.Redis.from_url(url, decode_responses=True), UPLOADS, prefix=f"test-{uuid.uuid4().hex}:")


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> TaskStore:
    if request.param == "sqlite":
        return SqliteTaskStore(tmp_path / "tasks.db", UPLOADS)
    if request.param == "redis":
        return _redis_store(request.getfixturevalue("redis_url"))
    return MemoryTaskStore()


def _task(task_id: str, owner: str = "alice", minutes_ago: int = 0, **changes: object) -> Task:
    job = Job(task_id=task_id, audio_path=UPLOADS / task_id, language="en", min_speakers=1, max_speakers=3)
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
    assert store.count_stored("alice") == 4  # completed and failed ones too
    assert store.count_stored("carol") == 0

    page, total = store.page("alice", None, limit=2, offset=0)
    assert ([task.id for task in page], total) == (["waiting", "running"], 4)
    page, total = store.page("alice", None, limit=2, offset=2)
    assert [task.id for task in page] == ["new-failed", "old-done"]
    page, total = store.page("alice", TaskStatus.PENDING, limit=10, offset=0)
    assert ([task.id for task in page], total) == (["waiting"], 1)

    assert [task.id for task in store.unfinished()] == ["running", "waiting", "bobs"]
    assert [task.id for task in store.ended_before(now - timedelta(minutes=10))] == ["old-done"]


def test_sqlite_tasks_outlive_the_store_object(tmp_path: Path) -> None:
    first = SqliteTaskStore(tmp_path / "tasks.db", UPLOADS)
    first.add(_task("a"))
    first.update("a", status=TaskStatus.PROCESSING, progress=12.0, stage=Stage.TRANSCRIBE)
    reopened = SqliteTaskStore(tmp_path / "tasks.db", UPLOADS)
    assert reopened.get("a") == first.get("a")
    assert reopened.unfinished()[0].progress == 12.0


def test_redis_limits_hold_for_concurrent_adds_from_many_connections(redis_url: str) -> None:
    """Eight writers, each with its own connection as separate API processes would have, race
    to add 40 tasks for one key under a limit of 5 active tasks: exactly 5 get in."""
    prefix = f"test-{uuid.uuid4().hex}:"
    verdicts: list[Admission] = []
    lock = threading.Lock()

    def writer(number: int) -> None:
        own = RedisTaskStore(redis.Redis.from_url(redis_url, decode_responses=True), UPLOADS, prefix=prefix)
        for index in range(5):
            verdict = own.add_within_limits(_task(f"{number}-{index}"), max_pending=100, max_active_per_owner=5)
            with lock:
                verdicts.append(verdict)

    threads = [threading.Thread(target=writer, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store = RedisTaskStore(redis.Redis.from_url(redis_url, decode_responses=True), UPLOADS, prefix=prefix)
    assert verdicts.count(Admission.ADDED) == 5
    assert verdicts.count(Admission.KEY_FULL) == 35
    assert store.count_active("alice") == 5


def test_redis_queue_limit_counts_every_key(redis_url: str) -> None:
    store = _redis_store(redis_url)
    assert store.add_within_limits(_task("a"), max_pending=2, max_active_per_owner=10) is Admission.ADDED
    assert store.add_within_limits(_task("b", owner="bob"), max_pending=2, max_active_per_owner=10) is Admission.ADDED
    assert store.add_within_limits(_task("c", owner="carol"), 2, 10) is Admission.QUEUE_FULL
    store.update("a", status=TaskStatus.PROCESSING)
    assert store.add_within_limits(_task("c", owner="carol"), 2, 10) is Admission.ADDED
    assert store.get("c") is not None


def test_redis_stored_limit_counts_ended_tasks(redis_url: str) -> None:
    store = _redis_store(redis_url)
    store.add(_task("failed", status=TaskStatus.FAILED, completed_at=utcnow()))
    assert store.add_within_limits(_task("a"), 100, 10, max_stored_per_owner=2) is Admission.ADDED
    assert store.add_within_limits(_task("b"), 100, 10, max_stored_per_owner=2) is Admission.KEY_STORE_FULL
    assert store.add_within_limits(_task("b", owner="bob"), 100, 10, max_stored_per_owner=2) is Admission.ADDED
    store.delete("failed")
    assert store.add_within_limits(_task("b"), 100, 10, max_stored_per_owner=2) is Admission.ADDED


def test_redis_conditional_update_and_the_change_stream(redis_url: str) -> None:
    store = _redis_store(redis_url)
    store.add(_task("a"))
    assert store.update_if("a", TaskStatus.PROCESSING, progress=5.0) is None
    assert store.update_if("a", TaskStatus.PENDING, status=TaskStatus.PROCESSING) is not None
    store.delete("a")
    changes = store.client.xrange(store.changes)
    records = [(json.loads(f["task"])["status"], f["deleted"], f["version"]) for _, f in changes]
    assert records == [("pending", "0", "1"), ("processing", "0", "2"), ("processing", "1", "3")]


def test_redis_writes_can_be_conditional_on_a_lease(redis_url: str) -> None:
    """A worker writes only while it holds the task's lease; the sweep only while nobody does."""
    store = _redis_store(redis_url)
    store.add(_task("a", status=TaskStatus.PROCESSING))
    lease = store.key("lease", "a")
    store.client.set(lease, "worker-2")
    assert store.update_if("a", TaskStatus.PROCESSING, (lease, "worker-1"), progress=50.0) is None
    assert store.update_if("a", TaskStatus.PROCESSING, (lease, None), status=TaskStatus.PENDING) is None
    assert store.update_if("a", {TaskStatus.PENDING, TaskStatus.PROCESSING}, (lease, "worker-2"), progress=9.0)
    store.client.delete(lease)
    assert store.update_if("a", TaskStatus.PROCESSING, (lease, None), status=TaskStatus.PENDING) is not None
    assert store.update_if("a", TaskStatus.PROCESSING, (lease, None), status=TaskStatus.FAILED) is None
    assert store.get("a").status is TaskStatus.PENDING  # type: ignore[union-attr]


def test_redis_queues_one_callback_per_end_with_the_change(redis_url: str) -> None:
    """The callback owed is appended in the change's own transaction; editing an ended task's result
    (renaming its speakers) is no change of state: no change entry, no second callback."""
    store = _redis_store(redis_url)
    task = _task("a")
    store.add(replace(task, job=replace(task.job, callback_url="https://example.com/hook")))
    store.add(_task("b"))  # no callback_url
    result = {"language": "en", "segments": []}
    store.update("a", status=TaskStatus.PROCESSING)
    store.update("a", status=TaskStatus.COMPLETED, result=result, completed_at=utcnow())
    store.update("b", status=TaskStatus.FAILED, error="x", completed_at=utcnow())
    changes_before = store.client.xlen(store.changes)
    store.update("a", result={**result, "speakers": []})
    assert store.client.xlen(store.changes) == changes_before, "a renamed result is not a change of state"
    owed = store.client.xrange(store.callbacks)
    assert [(json.loads(f["task"])["id"], f["status"]) for _, f in owed] == [("a", "completed")]
    assert json.loads(json.loads(owed[0][1]["task"])["result"]) == result, "the callback carries the result"


def _owed(task: Task) -> tuple[str, str] | None:
    """A stand-in for the webhook sender's record: what the store must write with the ending."""
    return (f"{task.id}.{task.status}", json.dumps({"status": task.status.value})) if task.job.callback_url else None


def _hooked(task_id: str) -> Task:
    task = _task(task_id)
    return replace(task, job=replace(task.job, callback_url="https://example.com/hook"))


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_local_store_writes_the_callback_owed_with_the_ending(kind: str, tmp_path: Path) -> None:
    """The delivery record is in the store as soon as the ending is: a crash right after the write
    that ended the task cannot lose its callback. A renamed result owes none."""
    path = tmp_path / "tasks.db"
    store: TaskStore = SqliteTaskStore(path, UPLOADS, _owed) if kind == "sqlite" else MemoryTaskStore(_owed)
    store.add(_hooked("a"))
    store.add(_task("b"))  # no callback_url
    store.update("a", status=TaskStatus.PROCESSING)
    store.update("b", status=TaskStatus.PROCESSING)
    assert store.pending_deliveries() == {}, "only an ending owes a callback"
    store.update("a", status=TaskStatus.COMPLETED, result={"segments": []}, completed_at=utcnow())
    store.update("b", status=TaskStatus.FAILED, error="x", completed_at=utcnow())
    # Read as a restart would, past this store object (for SQLite: the file, by a new connection).
    after = SqliteTaskStore(path, UPLOADS) if kind == "sqlite" else store
    assert after.pending_deliveries() == {"a.completed": '{"status": "completed"}'}
    after.drop_delivery("a.completed")  # delivered
    store.update("a", result={"segments": [], "speakers": []})
    assert after.pending_deliveries() == {}, "a renamed result owes no second callback"


def test_sqlite_writes_the_ending_and_its_callback_in_one_transaction(tmp_path: Path) -> None:
    """When the delivery record cannot be written, neither is the ending: never an ended task whose
    callback is lost. (The failing insert is a trigger, as a full disk would fail it.)"""
    path = tmp_path / "tasks.db"
    store = SqliteTaskStore(path, UPLOADS, _owed)
    store.add(_hooked("a"))
    store.update("a", status=TaskStatus.PROCESSING)
    other = sqlite3.connect(path)
    other.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON webhook_deliveries BEGIN SELECT RAISE(ABORT, 'disk full'); END"
    )
    other.commit()
    with pytest.raises(sqlite3.IntegrityError, match="disk full"):
        store.update("a", status=TaskStatus.COMPLETED, completed_at=utcnow())
    assert store.get("a").status is TaskStatus.PROCESSING  # type: ignore[union-attr]
    other.execute("DROP TRIGGER refuse")
    other.commit()
    other.close()
    store.update("a", status=TaskStatus.COMPLETED, completed_at=utcnow())
    assert list(store.pending_deliveries()) == ["a.completed"]


def test_webhook_deliveries_are_kept_and_taken_once(store: TaskStore) -> None:
    store.put_delivery("a.completed", '{"attempts_made": 0}')
    store.put_delivery("b.failed", '{"attempts_made": 0}')
    store.put_delivery("a.completed", '{"attempts_made": 1}')  # a retry rewrites it
    assert store.pending_deliveries() == {"a.completed": '{"attempts_made": 1}', "b.failed": '{"attempts_made": 0}'}
    assert store.take_delivery("a.completed") is True
    assert store.take_delivery("a.completed") is False, "a second process finds it taken"
    store.drop_delivery("b.failed")
    store.drop_delivery("never-there")
    assert store.pending_deliveries() == {}


def test_redis_ignores_a_record_copied_under_another_tasks_id(redis_url: str) -> None:
    """Its upload is the other task's: read, updated or deleted by this id, it must not be acted on."""
    store = _redis_store(redis_url)
    store.add(_task("a"))
    store.client.hset(store.key("task", "b"), mapping=store.client.hgetall(store.key("task", "a")))
    store.client.zadd(store.key("owner", "alice"), {"b": 0})
    assert store.get("b") is None
    assert store.update("b", progress=50.0) is None
    assert store.delete("b") is None
    assert [task.id for task in store.page("alice", None, 10, 0)[0]] == ["a"]
