"""How a task moves through its states, the same whichever backend runs it.

    pending -> processing -> completed | failed      (deleted at any point; expired once ended)

Every write that moves a task takes its changes from here, so the local backend (manager.py)
and the Celery one (dispatcher.py in the API, remote.py in a worker) fail, complete and
time out a task with the same fields and the same words. The backends keep what differs:
how a job reaches a worker and how it is stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from app.config import Settings
from app.pipeline.base import Job, PipelineInfo, PipelineOutput, Stage
from app.storage import Storage
from app.storage.local import LocalStorage
from app.tasks.async_store import AsyncTaskStore
from app.tasks.events import TaskEvents
from app.tasks.models import Task, TaskStatus, utcnow
from app.tasks.progress import STAGE_MESSAGES, ProgressTracker

logger = logging.getLogger(__name__)


PREPARE_ERROR = "The audio could not be fetched because of an unexpected error; try again."
FAIL_RETRY_MAX_SECONDS = 30.0
"""The longest wait between tries to record a failure the store refused."""


class PrepareFailed(Exception):
    """A task's input could not be fetched; the message is meant for the user."""


Prepare = Callable[[Callable[[float], Awaitable[None]]], Awaitable[Job]]
"""Fetches a task's input in the API process (its audio_url), reporting the fraction done;
returns the job as the worker should see it (its probed duration filled in)."""


@dataclass
class WorkerState:
    """What `/health` shows about the models."""

    info: PipelineInfo | None
    loaded: bool
    load_error: str | None
    loaded_models: dict[str, list[str]] = field(default_factory=dict)
    """Each worker's loaded Whisper models, by worker name."""
    model_errors: dict[str, str] = field(default_factory=dict)
    """Whisper models requests asked for that a worker could not load, with why."""


class StageWatch:
    """Which stage a job is in and since when, from its progress events."""

    def __init__(self, stages: list[Stage]) -> None:
        self._stages = stages
        self.current = stages[0]
        self.since = time.monotonic()
        self.timed_out: Stage | None = None
        """The stage that ran past STAGE_TIMEOUT_SECONDS, once the backend stopped it."""

    def report(self, stage: Stage, fraction: float) -> None:
        # A stage reports its fraction after doing the work: at 1.0 the next stage is running.
        index = self._stages.index(stage)
        running = self._stages[index + 1] if fraction >= 1.0 and index + 1 < len(self._stages) else stage
        if running != self.current:
            self.current, self.since = running, time.monotonic()

    def overdue(self, limit: float) -> bool:
        return time.monotonic() - self.since > limit


class RunProgress:
    """A running task's progress events, as the store changes for one overall percentage."""

    def __init__(self, task: Task) -> None:
        self._tracker = ProgressTracker(task.job.progress_stages)
        self.watch = StageWatch(task.job.stages)

    def step(self, stage: Stage, fraction: float) -> dict[str, Any]:
        self.watch.report(stage, fraction)
        percent = round(self._tracker.update(stage, fraction), 1)
        return {"stage": stage, "progress": percent, "message": STAGE_MESSAGES[stage]}


# The changes each move writes. The API process writes them through `Lifecycle`, a Celery
# worker (remote.py) straight to its store; the fields and the words are these either way.


def started(message: str = "Starting", **changes: Any) -> dict[str, Any]:
    # Progress carries on from the download, when there was one: it never goes backwards.
    return {"status": TaskStatus.PROCESSING, "started_at": utcnow(), "message": message, **changes}


def requeued(message: str) -> dict[str, Any]:
    return {"status": TaskStatus.PENDING, "progress": 0.0, "stage": None, "started_at": None, "message": message}


def completed(output: PipelineOutput) -> dict[str, Any]:
    message = "Transcription completed successfully"
    if output.note:
        message = f"Transcription completed; {output.note}"
    # One update: the result, status and times land together or not at all.
    return {
        "status": TaskStatus.COMPLETED, "progress": 100.0, "stage": None, "message": message,
        "completed_at": utcnow(), "result": output.result,
    }  # fmt: skip


def failed(error: str, server_fault: bool = False) -> dict[str, Any]:
    """`server_fault`: the server failed (a worker died, an unexpected error), not the input."""
    return {
        "status": TaskStatus.FAILED, "message": "Transcription failed", "error": error, "completed_at": utcnow(),
        "server_fault": server_fault,
    }  # fmt: skip


def load_failure(load_error: str) -> str:
    return (
        f"The server could not load its speech model ({load_error}), so it cannot transcribe; "
        "tell the server's operator (GET /health shows the cause)."
    )


def timeout_failure(stage: Stage, settings: Settings) -> str:
    return (
        f"The {stage.value} stage took longer than the server's limit of "
        f"{settings.stage_timeout_seconds:g} s (STAGE_TIMEOUT_SECONDS); try a shorter file."
    )


class Lifecycle:
    """The API process's store writes that move tasks; with `events`, each is published there too.

    The Redis store publishes its own writes (every API process follows them), so the Celery
    backend passes no `events`; the local backend's store is silent, so it passes its own.
    """

    def __init__(
        self,
        store: AsyncTaskStore,
        settings: Settings,
        events: TaskEvents | None = None,
        storage: Storage | None = None,
    ) -> None:
        self.store = store
        self._settings = settings
        self._events = events
        self.storage: Storage = storage or LocalStorage(settings.upload_dir)
        """Where uploads wait; every removal of one goes through `storage.discard`."""
        self._downloads: dict[str, asyncio.Task[None]] = {}
        self._failing: set[asyncio.Task[None]] = set()

    async def update(self, task_id: str, **changes: Any) -> Task | None:
        """Apply changes; None when the task is gone (deleted meanwhile)."""
        task = await self.store.update(task_id, **changes)
        if task is not None and self._events is not None:
            self._events.publish(task)
        return task

    async def start(self, task: Task) -> RunProgress | None:
        """Mark the task processing; the progress to report its stages with, None when it is gone."""
        return None if await self.update(task.id, **started()) is None else RunProgress(task)

    async def requeue(self, task_id: str, message: str) -> None:
        await self.update(task_id, **requeued(message))

    async def complete(self, task_id: str, output: PipelineOutput) -> None:
        await self.update(task_id, **completed(output))

    async def fail(self, task_id: str, error: str, server_fault: bool = False) -> None:
        logger.info("Task %s failed: %s", task_id, error)
        await self.update(task_id, **failed(error, server_fault))

    def fail_when_stored(self, task_id: str, error: str) -> None:
        """Fail the task in the background, trying until the store takes the write: a store that failed
        mid-task must not leave the task moving (processing, downloading) for good."""

        async def keep_trying() -> None:
            delay = 0.5
            while True:
                try:
                    await self.fail(task_id, error, server_fault=True)
                    return
                except Exception as failure:  # noqa: BLE001 - the store away: try again
                    logger.warning("Could not fail task %s yet (%s); trying again in %.1f s", task_id, failure, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, FAIL_RETRY_MAX_SECONDS)

        failing = asyncio.create_task(keep_trying(), name=f"fail-{task_id}")
        self._failing.add(failing)
        failing.add_done_callback(self._failing.discard)

    async def fail_to_load(self, task_id: str, load_error: str) -> None:
        await self.fail(task_id, load_failure(load_error), server_fault=True)

    async def time_out(self, task_id: str, stage: Stage) -> None:
        await self.fail(task_id, timeout_failure(stage, self._settings))

    async def delete(self, task_id: str, owner: str, stop: Callable[[Task], Awaitable[None]]) -> bool:
        """Remove the owner's task in any state, with its upload; False when there is none.

        A download stops here; `stop` is the backend's way to stop the task if a worker runs it."""
        found = await self.store.get(task_id)
        if found is None or found.owner != owner:
            return False
        # The task as it was when removed (it may have started meanwhile); None when another delete won.
        task = await self.store.delete(task_id)
        if task is None:
            return False
        if self._events is not None:
            self._events.publish(task, deleted=True)
        if (download := self._downloads.pop(task_id, None)) is not None:
            download.cancel()  # the download stops and removes what it wrote
        await self.storage.discard(task.job)
        await stop(task)
        return True

    def download(self, task: Task, prepare: Prepare, queue: Callable[[Job], Awaitable[None]]) -> None:
        """Fetch the task's input in the background, then `queue` its job; it counts as pending meanwhile."""

        async def fetch() -> None:
            try:
                job = await self.fetch_input(task, prepare)
                if job is not None:
                    await queue(job)
            except Exception:  # the store failed on the way: the task fails once it answers again
                logger.exception("Preparing task %s failed", task.id)
                self.fail_when_stored(task.id, PREPARE_ERROR)
            finally:
                self._downloads.pop(task.id, None)

        self._downloads[task.id] = asyncio.create_task(fetch(), name=f"prepare-{task.id}")

    async def stop_background(self) -> list[str]:
        """Cancel the downloads under way (and failures still waiting for the store); the downloads' task ids."""
        downloads = dict(self._downloads)
        for running in [*downloads.values(), *self._failing]:
            running.cancel()
        await asyncio.gather(*downloads.values(), *self._failing, return_exceptions=True)
        return list(downloads)

    async def fetch_input(self, task: Task, prepare: Prepare) -> Job | None:
        """Run a task's `prepare` as its downloading stage and record the job on the task.

        None when it failed (and the task with it), or when the task was deleted meanwhile.
        """
        tracker = ProgressTracker(task.job.progress_stages)
        written = -1.0

        async def on_progress(fraction: float) -> None:
            nonlocal written
            percent = round(tracker.update(Stage.DOWNLOAD, fraction), 1)
            if percent != written:  # a chunk that moves the percentage, not every chunk
                written = percent
                await self.update(
                    task.id, stage=Stage.DOWNLOAD, progress=percent, message=STAGE_MESSAGES[Stage.DOWNLOAD]
                )

        try:
            job = await prepare(on_progress)
        except PrepareFailed as error:
            await self.fail(task.id, str(error))
            return None
        except Exception:  # one task fails, the service goes on
            logger.exception("Preparing task %s failed", task.id)
            await self.fail(task.id, PREPARE_ERROR)
            return None
        try:
            recorded = await self.update(task.id, job=job, stage=None, message="Waiting in the queue")
        except BaseException:
            await self.storage.discard(job)  # never recorded: nothing else would remove it
            raise
        if recorded is None:
            await self.storage.discard(job)  # deleted just as the download ended
            return None
        return job

    async def expire(self) -> None:
        """Delete the tasks that ended more than TASK_TTL_HOURS ago, with their uploads."""
        ttl = timedelta(hours=self._settings.task_ttl_hours)
        for task in await self.store.ended_before(utcnow() - ttl):
            if await self.store.delete(task.id) is not None:
                if self._events is not None:
                    self._events.publish(task, deleted=True)
                await self.storage.discard(task.job)
                logger.info("Task %s expired after %s h", task.id, self._settings.task_ttl_hours)

    async def expire_forever(self) -> None:
        """Run `expire` for good."""
        ttl_seconds = self._settings.task_ttl_hours * 3600
        # Check often enough that a task outlives its TTL by at most a tenth of it (and by a minute at most).
        interval = min(max(ttl_seconds / 10, 0.2), 60.0)
        while True:
            try:
                await self.expire()
            except Exception:  # the store away for a moment: try again next round
                logger.warning("Expiring ended tasks failed", exc_info=True)
            await asyncio.sleep(interval)
