"""TASK_BACKEND=celery: tasks, progress and results in Redis, shared by API processes and workers.

Each task is a hash; sorted sets index it by status, by owner and by end time, so every
query of the TaskStore protocol is an index read. Writes are WATCH/MULTI transactions
(redis-py's optimistic locking): a write never resurrects a task deleted meanwhile, the
indexes always agree with the hashes, and the upload limits are checked and applied in
one step across any number of API processes.

Every write also appends the change to a Redis Stream, in the same transaction (an outbox):
API processes read it from where they left off, so a change made while one was restarting or
reconnecting still reaches it (app/tasks/streams.py). A change that owes a callback (a task
with a `callback_url` entering `completed` or `failed`) is appended to a second stream, which
the API processes share as a consumer group, so each callback is claimed by one of them.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar, cast

import redis

from app.tasks.codec import RecordRefused, from_record, to_record
from app.tasks.models import ACTIVE, TERMINAL, Task, TaskStatus

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class Admission(Enum):
    ADDED = "added"
    QUEUE_FULL = "queue full"
    KEY_FULL = "key full"
    KEY_STORE_FULL = "key store full"


CHANGES_KEPT = 10_000
"""About how many changes the change stream keeps: enough for the gap of a reconnect or a restart
(a busy service writes a few changes a second per running task); an API process that fell further
behind re-reads the tasks it follows instead."""

SOCKET_TIMEOUT_SECONDS = 10.0
"""A healthy Redis answers in milliseconds; a call to one that stopped answering fails after this,
rather than holding its thread (and the request waiting on it) for good."""


def redis_client(url: str) -> redis.Redis:
    """A client for the stores: text replies (records are read back as text) and bounded waits."""
    return redis.Redis.from_url(
        url, decode_responses=True, socket_timeout=SOCKET_TIMEOUT_SECONDS, socket_connect_timeout=SOCKET_TIMEOUT_SECONDS
    )


def _score(moment: datetime) -> float:
    return moment.timestamp()


class RedisTaskStore:
    durable = True

    def __init__(self, client: redis.Redis, upload_dir: Path, prefix: str = "whisperx:") -> None:
        # The client must decode responses: records are read back as text.
        self.client = client
        self._upload_dir = upload_dir
        self._redis = client
        self._prefix = prefix
        self.changes = f"{prefix}changes"
        """The stream of every write, as {"task": record without its result, "deleted": 0|1, "version": n}."""
        self.callbacks = f"{prefix}callbacks"
        """The stream of callbacks owed, as {"task": record, "status": the state it entered}."""

    @classmethod
    def from_url(cls, url: str, upload_dir: Path) -> RedisTaskStore:
        return cls(redis_client(url), upload_dir)

    def load(self, record: Mapping[Any, Any]) -> Task | None:
        """The task of a stored or published record; None (logged) when it must not be acted on."""
        if not record:
            return None
        try:
            return from_record(record, self._upload_dir)
        except RecordRefused as refused:
            logger.warning("%s", refused)
            return None

    def key(self, *parts: str) -> str:
        return self._prefix + ":".join(parts)

    def _task_key(self, task_id: str) -> str:
        return self.key("task", task_id)

    def _indexes(self, task: Task) -> list[str]:
        status = task.status.value
        return [self.key("status", status), self.key("owner", task.owner), self.key("owner", task.owner, status)]

    # Writes

    def _transaction(self, task_id: str, body: Callable[[Any, dict[str, str]], _T], watch: tuple[str, ...] = ()) -> _T:
        """Run `body(pipe, the task's fields)` under WATCH, again whenever someone wrote meanwhile."""
        key = self._task_key(task_id)
        with self._redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key, *watch)  # type: ignore[no-untyped-call]
                    return body(pipe, cast(dict[str, str], pipe.hgetall(key)))  # decode_responses
                except redis.WatchError:
                    continue  # read again and redo

    def _write(
        self, task_id: str, change: Callable[[Task | None], Task | None], watch: tuple[str, ...] = ()
    ) -> tuple[Task | None, Task | None]:
        """Run `change` on the current task and store what it returns, atomically; (before, after)."""

        def write(pipe: Any, fields: dict[str, str]) -> tuple[Task | None, Task | None]:
            before = self._own(task_id, self.load(fields))
            if fields and before is None:
                pipe.unwatch()
                return None, None  # a refused record is left as it is
            after = change(before)
            if after is None or after == before:
                pipe.unwatch()
                return before, after
            pipe.multi()
            self._stage(pipe, before, after, fields, int(fields.get("version", 0)) + 1)
            pipe.execute()
            return before, after

        return self._transaction(task_id, write, watch)

    def _stage(self, pipe: Any, before: Task | None, after: Task, stored: Mapping[Any, Any], version: int) -> None:
        key = self._task_key(after.id)
        record = to_record(after)
        # Only what differs from the stored hash (Redis keeps text), including what an older version wrote.
        present = {
            name: value for name, value in record.items() if value is not None and stored.get(name) != str(value)
        }
        absent = [name for name, value in record.items() if value is None and stored.get(name) is not None]
        pipe.hset(key, mapping={**present, "version": version})
        if absent:
            pipe.hdel(key, *absent)
        score = _score(after.created_at)
        if before is None or before.status != after.status:
            if before is not None:
                for index in self._indexes(before):
                    pipe.zrem(index, after.id)
            for index in self._indexes(after):
                pipe.zadd(index, {after.id: score})
        if after.status in TERMINAL and after.completed_at is not None:
            pipe.zadd(self.key("ended"), {after.id: _score(after.completed_at)})
        elif before is not None and before.status in TERMINAL:
            pipe.zrem(self.key("ended"), after.id)
        if before is not None and before.status in TERMINAL and after.status is before.status:
            # An ended task's result edited (speakers renamed): not a change of state, so nobody is told
            # again, as on the local backend; the next read returns it.
            return
        self._append_change(pipe, record, deleted=False, version=version)
        if after.job.callback_url and after.status in TERMINAL and (before is None or before.status != after.status):
            pipe.xadd(self.callbacks, {"task": json.dumps(record), "status": after.status.value})

    def _append_change(self, pipe: Any, record: dict[str, Any], deleted: bool, version: int) -> None:
        # Without the result: followers are told that a task ended, and read the result when they need it.
        change = {"task": json.dumps({**record, "result": None}), "deleted": int(deleted), "version": version}
        pipe.xadd(self.changes, change, maxlen=CHANGES_KEPT, approximate=True)

    def add(self, task: Task) -> None:
        self._write(task.id, lambda _before: task)

    def add_within_limits(
        self, task: Task, max_pending: int, max_active_per_owner: int, max_stored_per_owner: int | None = None
    ) -> Admission:
        """Add the task unless the queue, its owner's active tasks or all its owner's stored tasks are at
        their limit, atomically."""
        pending = self.key("status", TaskStatus.PENDING.value)
        mine = [self.key("owner", task.owner, status.value) for status in ACTIVE]
        stored = self.key("owner", task.owner)
        verdict = Admission.ADDED

        def admit(_before: Task | None) -> Task | None:
            nonlocal verdict
            # Read under WATCH: a concurrent add by another process makes the transaction retry.
            if sum(self._redis.zcard(index) for index in mine) >= max_active_per_owner:
                verdict = Admission.KEY_FULL
                return None
            if max_stored_per_owner is not None and self._redis.zcard(stored) >= max_stored_per_owner:
                verdict = Admission.KEY_STORE_FULL
                return None
            if self._redis.zcard(pending) >= max_pending:
                verdict = Admission.QUEUE_FULL
                return None
            verdict = Admission.ADDED
            return task

        self._write(task.id, admit, watch=(pending, stored, *mine))
        return verdict

    def update(self, task_id: str, **changes: Any) -> Task | None:
        return self.update_if(task_id, None, **changes)

    def update_if(
        self,
        task_id: str,
        only_while: TaskStatus | Collection[TaskStatus] | None,
        holding: tuple[str, str | None] | None = None,
        **changes: Any,
    ) -> Task | None:
        """Update only while the task is in status `only_while` (one of them; any when None) and, with
        `holding=(key, token)`, while that key holds that token (a lease: None for no lease at all);
        None when it was not so. The key is watched with the task: the check and the write are one step."""
        expected = {only_while} if isinstance(only_while, TaskStatus) else only_while

        def change(before: Task | None) -> Task | None:
            if before is None or (expected is not None and before.status not in expected):
                return None
            if holding is not None and self._redis.get(holding[0]) != holding[1]:
                return None
            return replace(before, **changes)

        return self._write(task_id, change, watch=() if holding is None else (holding[0],))[1]

    def delete(self, task_id: str) -> Task | None:
        def remove(pipe: Any, fields: dict[str, str]) -> Task | None:
            task = self._own(task_id, self.load(fields))
            if task is None:
                pipe.unwatch()
                return None
            version = int(fields.get("version", 0)) + 1
            pipe.multi()
            pipe.delete(self._task_key(task_id))
            for index in [*self._indexes(task), self.key("ended")]:
                pipe.zrem(index, task_id)
            self._append_change(pipe, to_record(task), deleted=True, version=version)
            pipe.execute()
            return task

        return self._transaction(task_id, remove)

    # Reads

    def get(self, task_id: str) -> Task | None:
        return self._own(task_id, self.load(self._redis.hgetall(self._task_key(task_id))))

    @staticmethod
    def _own(task_id: str, task: Task | None) -> Task | None:
        """The task stored under this id, if it is the task of that id (a record copied under another
        key would lead to that task's upload)."""
        if task is not None and task.id != task_id:
            logger.warning("stored task %r is a record of task %r; ignored", task_id, task.id)
            return None
        return task

    def _get_many(self, task_ids: list[str]) -> list[Task]:
        with self._redis.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.hgetall(self._task_key(task_id))
            # A task deleted between the index read and this one is skipped.
            loaded = [
                self._own(task_id, self.load(fields)) for task_id, fields in zip(task_ids, pipe.execute(), strict=True)
            ]
            return [task for task in loaded if task is not None]

    def count_by_status(self) -> Counter[TaskStatus]:
        with self._redis.pipeline(transaction=False) as pipe:
            for status in TaskStatus:
                pipe.zcard(self.key("status", status.value))
            counts = pipe.execute()
        return Counter({status: count for status, count in zip(TaskStatus, counts, strict=True) if count})

    def count_active(self, owner: str) -> int:
        return sum(self._redis.zcard(self.key("owner", owner, status.value)) for status in ACTIVE)

    def count_stored(self, owner: str) -> int:
        return int(self._redis.zcard(self.key("owner", owner)))

    def page(self, owner: str, status: TaskStatus | None, limit: int, offset: int) -> tuple[list[Task], int]:
        index = self.key("owner", owner) if status is None else self.key("owner", owner, status.value)
        total = self._redis.zcard(index)
        task_ids = cast(list[str], self._redis.zrevrange(index, offset, offset + limit - 1))
        return self._get_many(task_ids), int(total)

    def unfinished(self) -> list[Task]:
        scored: list[tuple[str, float]] = []
        for status in ACTIVE:
            scored += cast(
                list[tuple[str, float]], self._redis.zrange(self.key("status", status.value), 0, -1, withscores=True)
            )
        return self._get_many([task_id for task_id, _ in sorted(scored, key=lambda item: item[1])])

    def ended_before(self, moment: datetime) -> list[Task]:
        ended = self._redis.zrangebyscore(self.key("ended"), "-inf", f"({_score(moment)}")
        return self._get_many(cast(list[str], ended))

    # Webhook deliveries: one hash, id -> record; HDEL is atomic, so one process takes each.

    def put_delivery(self, message_id: str, record: str) -> None:
        self._redis.hset(self.key("deliveries"), message_id, record)

    def take_delivery(self, message_id: str) -> bool:
        return bool(self._redis.hdel(self.key("deliveries"), message_id))

    def drop_delivery(self, message_id: str) -> None:
        self._redis.hdel(self.key("deliveries"), message_id)

    def pending_deliveries(self) -> dict[str, str]:
        return cast(dict[str, str], self._redis.hgetall(self.key("deliveries")))
