"""Where tasks live. Routes read the store; only the task manager writes it."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any, Protocol

from app.tasks.models import Task, TaskStatus


class TaskStore(Protocol):
    def add(self, task: Task) -> None: ...

    def get(self, task_id: str) -> Task | None: ...

    def update(self, task_id: str, **changes: Any) -> Task | None:
        """Apply changes to a task; None when the task is gone (deleted meanwhile)."""
        ...

    def delete(self, task_id: str) -> Task | None: ...

    def count_by_status(self) -> Counter[TaskStatus]: ...


class MemoryTaskStore:
    """The seed's design: tasks in a dict, gone when the process ends."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}

    def add(self, task: Task) -> None:
        self._tasks[task.id] = task

    def get(self, task_id: str) -> Task | None:
        return self._tasks.get(task_id)

    def update(self, task_id: str, **changes: Any) -> Task | None:
        task = self._tasks.get(task_id)
        if task is None:
            return None
        # Replace rather than mutate, so a reader never sees a half-applied change.
        self._tasks[task_id] = updated = replace(task, **changes)
        return updated

    def delete(self, task_id: str) -> Task | None:
        return self._tasks.pop(task_id, None)

    def count_by_status(self) -> Counter[TaskStatus]:
        return Counter(task.status for task in self._tasks.values())
