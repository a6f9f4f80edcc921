"""A task's state as the store keeps it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from app.pipeline.base import Job, Stage


class TaskStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


TERMINAL = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED})
ACTIVE = frozenset({TaskStatus.PENDING, TaskStatus.PROCESSING})


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Task:
    job: Job
    owner: str = ""
    """The id of the API key that created the task (app/keys.py), never the key itself."""
    status: TaskStatus = TaskStatus.PENDING
    progress: float = 0.0
    stage: Stage | None = None
    message: str = "Waiting in the queue"
    created_at: datetime = field(default_factory=utcnow)
    started_at: datetime | None = None
    completed_at: datetime | None = None
    error: str | None = None
    server_fault: bool = False
    """The failure was the server's (a worker that died, an unexpected error, the store), not the input's."""
    result: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        return self.job.task_id
