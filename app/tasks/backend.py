"""What the routes use to run tasks, whichever backend runs them (TASK_BACKEND)."""

from __future__ import annotations

from typing import Protocol

from app.pipeline.base import Job
from app.tasks.events import TaskEvents
from app.tasks.lifecycle import Prepare, WorkerState
from app.tasks.models import Task
from app.tasks.streams import CallbackQueue


class TaskBackend(Protocol):
    """TASK_BACKEND=local: TaskManager (app/tasks/manager.py); celery: CeleryDispatcher (app/tasks/dispatcher.py)."""

    events: TaskEvents
    """Every change of a task, for SSE streams, metrics and webhooks."""

    callbacks: CallbackQueue | None
    """Where the callbacks owed wait, shared by every API process (Celery); None: they follow `events`."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def check_capacity(self, owner: str) -> None:
        """Raise OverCapacity when an upload by this owner would be refused now."""
        ...

    async def submit(self, job: Job, owner: str, prepare: Prepare | None = None) -> Task:
        """Queue a job, checking the limits atomically; raises OverCapacity.

        With `prepare` (an audio_url download), the task waits pending until its input is fetched."""
        ...

    async def delete(self, task_id: str, owner: str) -> bool:
        """Remove the owner's task in any state, stopping it if it runs; False when there is none."""
        ...

    def worker_state(self) -> WorkerState: ...
