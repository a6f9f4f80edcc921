"""Why an upload is refused before it becomes a task, and the limits both backends enforce."""

from __future__ import annotations

from app.config import Settings
from app.tasks.async_store import AsyncTaskStore
from app.tasks.models import TaskStatus

RETRY_AFTER_SECONDS = 30
"""A task takes tens of seconds to minutes; retrying sooner than this only adds load."""


class OverCapacity(Exception):
    """An upload refused by a limit; `status` and `detail` are what the client is told."""

    status: int

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class QueueFull(OverCapacity):
    status = 503

    def __init__(self, limit: int) -> None:
        super().__init__(f"The server is busy: {limit} tasks are already waiting (MAX_QUEUE_SIZE); retry later.")


class TooManyTasks(OverCapacity):
    status = 429

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"This API key already has {limit} tasks pending or processing (MAX_TASKS_PER_KEY); "
            "wait for one to finish or delete one."
        )


class TooManyStoredTasks(OverCapacity):
    status = 429

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"This API key already has {limit} tasks stored, counting completed and failed ones "
            "(MAX_STORED_TASKS_PER_KEY); delete some (DELETE /api/v1/transcribe/task/{task_id}) "
            "or wait for them to expire (TASK_TTL_HOURS)."
        )


class QueueUnreachable(OverCapacity):
    status = 503

    def __init__(self) -> None:
        super().__init__("The task queue (Redis) cannot be reached; retry later.")


async def check_limits(store: AsyncTaskStore, settings: Settings, owner: str) -> None:
    """Raise OverCapacity when the owner's tasks or the queue are at their limit in `store`."""
    if await store.count_active(owner) >= settings.max_tasks_per_key:
        raise TooManyTasks(settings.max_tasks_per_key)
    if await store.count_stored(owner) >= settings.max_stored_tasks_per_key:
        raise TooManyStoredTasks(settings.max_stored_tasks_per_key)
    if (await store.count_by_status())[TaskStatus.PENDING] >= settings.max_queue_size:
        raise QueueFull(settings.max_queue_size)
