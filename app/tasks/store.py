"""Where tasks live. Routes read the store; the task lifecycle (app/tasks/lifecycle.py) writes it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

from app.tasks.models import ACTIVE, TERMINAL, Task, TaskStatus

OwedCallback = Callable[[Task], tuple[str, str] | None]
"""The delivery record (message id, record) that a task entering `completed` or `failed` owes, None
when it owes none (app/outbound/webhooks.py makes it). The local backend's stores write it in the same
write as the state change, so a crash between the two cannot lose the callback; the Redis store queues
its own with the change (redis_store.py)."""


def owes_callback(before: Task, after: Task) -> bool:
    """Whether this change is the task's entry into an ending state (a renamed result is not)."""
    return after.status in TERMINAL and after.status != before.status


class TaskStore(Protocol):
    durable: bool
    """True when tasks outlive the process, so uploads must be kept for a restart."""

    def add(self, task: Task) -> None: ...

    def get(self, task_id: str) -> Task | None: ...

    def update(self, task_id: str, **changes: Any) -> Task | None:
        """Apply changes to a task; None when the task is gone (deleted meanwhile). A change that owes
        a callback writes its delivery record in the same step."""
        ...

    def delete(self, task_id: str) -> Task | None: ...

    def count_by_status(self) -> Counter[TaskStatus]: ...

    def count_active(self, owner: str) -> int:
        """Tasks of this owner that are pending or processing."""
        ...

    def count_stored(self, owner: str) -> int:
        """Tasks of this owner in any status."""
        ...

    def page(self, owner: str, status: TaskStatus | None, limit: int, offset: int) -> tuple[list[Task], int]:
        """One page of an owner's tasks, newest first, and how many there are in all."""
        ...

    def unfinished(self) -> list[Task]:
        """Pending and processing tasks, oldest first: what a restart must pick up."""
        ...

    def ended_before(self, moment: datetime) -> list[Task]:
        """Completed or failed tasks that ended before `moment`: what retention expires."""
        ...

    # Webhook deliveries waiting to succeed (app/outbound/webhooks.py), as opaque JSON records.

    def put_delivery(self, message_id: str, record: str) -> None: ...

    def take_delivery(self, message_id: str) -> bool:
        """Remove a delivery; True only for the one caller that removed it."""
        ...

    def drop_delivery(self, message_id: str) -> None: ...

    def pending_deliveries(self) -> dict[str, str]: ...


class MemoryTaskStore:
    """The seed's design: tasks in a dict, gone when the process ends."""

    durable = False

    def __init__(self, owed: OwedCallback | None = None) -> None:
        self._tasks: dict[str, Task] = {}
        self._deliveries: dict[str, str] = {}
        self._owed = owed

    def add(self, task: Task) -> None:
        self._tasks[task.id] = task

    def get(self, task_id: str) -> Task | None:
        return self._tasks.get(task_id)

    def update(self, task_id: str, **changes: Any) -> Task | None:
        task = self._tasks.get(task_id)
        if task is None:
            return None
        # Replace rather than mutate, so a reader never sees a half-applied change.
        updated = replace(task, **changes)
        owed = self._owed(updated) if self._owed is not None and owes_callback(task, updated) else None
        self._tasks[task_id] = updated
        if owed is not None:
            self._deliveries[owed[0]] = owed[1]
        return updated

    def delete(self, task_id: str) -> Task | None:
        return self._tasks.pop(task_id, None)

    def count_by_status(self) -> Counter[TaskStatus]:
        return Counter(task.status for task in self._tasks.values())

    def count_active(self, owner: str) -> int:
        return sum(1 for task in self._tasks.values() if task.owner == owner and task.status in ACTIVE)

    def count_stored(self, owner: str) -> int:
        return sum(1 for task in self._tasks.values() if task.owner == owner)

    def page(self, owner: str, status: TaskStatus | None, limit: int, offset: int) -> tuple[list[Task], int]:
        mine = [task for task in self._tasks.values() if task.owner == owner and status in (None, task.status)]
        mine.sort(key=lambda task: task.created_at, reverse=True)
        return mine[offset : offset + limit], len(mine)

    def unfinished(self) -> list[Task]:
        return sorted((task for task in self._tasks.values() if task.status in ACTIVE), key=lambda t: t.created_at)

    def ended_before(self, moment: datetime) -> list[Task]:
        return [
            task
            for task in self._tasks.values()
            if task.status in TERMINAL and task.completed_at is not None and task.completed_at < moment
        ]

    def put_delivery(self, message_id: str, record: str) -> None:
        self._deliveries[message_id] = record

    def take_delivery(self, message_id: str) -> bool:
        return self._deliveries.pop(message_id, None) is not None

    def drop_delivery(self, message_id: str) -> None:
        self._deliveries.pop(message_id, None)

    def pending_deliveries(self) -> dict[str, str]:
        return dict(self._deliveries)
