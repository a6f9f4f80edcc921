"""TASK_STORE=sqlite: tasks, progress and results in one SQLite file, so they survive a restart.

Every write is one transaction, so a task (result included) is either wholly updated or not at
all; a change that owes a callback writes its delivery record in the same transaction (an outbox),
so a crash right after a task ended cannot lose its callback. WAL with synchronous=NORMAL keeps
each commit to a few hundred microseconds and survives the process being killed (not a power
cut), which is what the restart recovery needs. Calls are tiny and run on the event loop, like the memory store's.

The table gains a column for every field of the record (app/tasks/codec.py) that it lacks
when it is opened, so a field added to `Task` needs no migration code; rows written before
have NULL there and read back with the field's default.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import Counter
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from app.private_files import private_file
from app.tasks.codec import FIELDS, RecordRefused, from_record, timestamp, to_record
from app.tasks.models import ACTIVE, TERMINAL, Task, TaskStatus
from app.tasks.store import OwedCallback, owes_callback

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    status TEXT NOT NULL,
    progress REAL NOT NULL,
    stage TEXT,
    message TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    completed_at TEXT,
    error TEXT,
    result TEXT,
    job TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_owner ON tasks (owner, status, created_at);
CREATE INDEX IF NOT EXISTS tasks_status ON tasks (status, completed_at);
CREATE TABLE IF NOT EXISTS webhook_deliveries (id TEXT PRIMARY KEY, record TEXT NOT NULL);
"""

_COLUMNS = FIELDS


class SqliteTaskStore:
    durable = True

    def __init__(self, path: Path, upload_dir: Path, owed: OwedCallback | None = None) -> None:
        self._upload_dir = upload_dir
        self._owed = owed
        private_file(path, "TASK_DB_PATH")  # task results are private too
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        present = {row["name"] for row in self._db.execute("PRAGMA table_info(tasks)")}
        for column in _COLUMNS:
            if column not in present:
                self._db.execute(f'ALTER TABLE tasks ADD COLUMN "{column}"')

    def _task(self, row: sqlite3.Row) -> Task | None:
        try:
            return from_record(dict(row), self._upload_dir)
        except RecordRefused as refused:
            logger.warning("%s", refused)
            return None

    def _tasks(self, rows: list[sqlite3.Row]) -> list[Task]:
        return [task for row in rows if (task := self._task(row)) is not None]

    def _query(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def add(self, task: Task) -> None:
        placeholders = ", ".join(f":{column}" for column in _COLUMNS)
        self._query(f"INSERT INTO tasks ({', '.join(_COLUMNS)}) VALUES ({placeholders})", to_record(task))  # noqa: S608

    def get(self, task_id: str) -> Task | None:
        rows = self._query("SELECT * FROM tasks WHERE id = ?", (task_id,))
        return self._task(rows[0]) if rows else None

    def update(self, task_id: str, **changes: Any) -> Task | None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                updated = self._update(task_id, changes)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return updated

    def _update(self, task_id: str, changes: dict[str, Any]) -> Task | None:
        rows = self._db.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchall()
        task = self._task(rows[0]) if rows else None
        if task is None:
            return None
        updated = replace(task, **changes)
        row, stored = to_record(updated), dict(rows[0])
        # Only the changed columns (a progress step never rewrites the result, and vice versa),
        # and those an older version wrote differently.
        columns = [column for column in _COLUMNS if column != "id" and row[column] != stored[column]]
        if columns:
            assignments = ", ".join(f"{column} = :{column}" for column in columns)
            self._db.execute(f"UPDATE tasks SET {assignments} WHERE id = :id", row)  # noqa: S608
        if self._owed is not None and owes_callback(task, updated) and (owed := self._owed(updated)) is not None:
            self._db.execute("INSERT OR REPLACE INTO webhook_deliveries (id, record) VALUES (?, ?)", owed)
        return updated

    def delete(self, task_id: str) -> Task | None:
        task = self.get(task_id)
        if task is not None:
            self._query("DELETE FROM tasks WHERE id = ?", (task_id,))
        return task

    def count_by_status(self) -> Counter[TaskStatus]:
        rows = self._query("SELECT status, COUNT(*) AS n FROM tasks GROUP BY status")
        return Counter({TaskStatus(row["status"]): row["n"] for row in rows})

    def count_active(self, owner: str) -> int:
        active = tuple(status.value for status in ACTIVE)
        rows = self._query("SELECT COUNT(*) AS n FROM tasks WHERE owner = ? AND status IN (?, ?)", (owner, *active))
        return int(rows[0]["n"])

    def count_stored(self, owner: str) -> int:
        return int(self._query("SELECT COUNT(*) AS n FROM tasks WHERE owner = ?", (owner,))[0]["n"])

    def page(self, owner: str, status: TaskStatus | None, limit: int, offset: int) -> tuple[list[Task], int]:
        where, params = "owner = ?", [owner]
        if status is not None:
            where, params = "owner = ? AND status = ?", [owner, status.value]
        total = self._query(f"SELECT COUNT(*) AS n FROM tasks WHERE {where}", params)[0]["n"]  # noqa: S608
        rows = self._query(
            f"SELECT * FROM tasks WHERE {where} ORDER BY created_at DESC LIMIT ? OFFSET ?",  # noqa: S608
            [*params, limit, offset],
        )
        return self._tasks(rows), int(total)

    def unfinished(self) -> list[Task]:
        active = tuple(status.value for status in ACTIVE)
        rows = self._query("SELECT * FROM tasks WHERE status IN (?, ?) ORDER BY created_at", active)
        return self._tasks(rows)

    def ended_before(self, moment: datetime) -> list[Task]:
        ended = tuple(status.value for status in TERMINAL)
        sql = "SELECT * FROM tasks WHERE status IN (?, ?) AND completed_at < ?"
        rows = self._query(sql, (*ended, timestamp(moment)))
        return self._tasks(rows)

    def put_delivery(self, message_id: str, record: str) -> None:
        self._query("INSERT OR REPLACE INTO webhook_deliveries (id, record) VALUES (?, ?)", (message_id, record))

    def take_delivery(self, message_id: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM webhook_deliveries WHERE id = ?", (message_id,)).rowcount == 1

    def drop_delivery(self, message_id: str) -> None:
        self.take_delivery(message_id)

    def pending_deliveries(self) -> dict[str, str]:
        return {row["id"]: row["record"] for row in self._query("SELECT id, record FROM webhook_deliveries")}
