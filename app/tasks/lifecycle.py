"""How a task moves through its states, the same whichever backend runs it.

    pending -> processing -> completed | failed      (deleted at any point; expired once ended)

Every write that moves a task goes through `Lifecycle`, so the local backend (manager.py)
and the Celery one (dispatcher.py in the API, remote.py in a worker) fail, complete and
time out a task with the same fields and the same words. The backends keep what differs:
how a job reaches a worker and how it is stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from app.config import Settings
from app.pipeline.base import Job, PipelineInfo, PipelineOutput, Stage
from app.tasks.events import TaskEvents
from app.tasks.models import Task, TaskStatus, utcnow
from app.tasks.progress import STAGE_MESSAGES, ProgressTracker
from app.tasks.store import TaskStore

logger = logging.getLogger(__name__)


class PrepareFailed(Exception):
    """A task's input could not be fetched; the message is meant for the user."""


Prepare = Callable[[Callable[[float], None]], Awaitable[Job]]
"""Fetches a task's input in the API process (its audio_url), reporting the fraction done;
returns the job as the worker should see it (its probed duration filled in)."""


@dataclass
class WorkerState:
    """What `/health` shows about the models."""

    info: PipelineInfo | None
    loaded: bool
    load_error: str | None


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
    """A running task's progress events, written to the store as one overall percentage."""

    def __init__(self, lifecycle: Lifecycle, task: Task) -> None:
        self._lifecycle = lifecycle
        self._task_id = task.id
        self._tracker = ProgressTracker(task.job.progress_stages)
        self.watch = StageWatch(task.job.stages)

    def report(self, stage: Stage, fraction: float, **changes: Any) -> Task | None:
        """Record the step; None when the task is gone (deleted meanwhile)."""
        self.watch.report(stage, fraction)
        percent = round(self._tracker.update(stage, fraction), 1)
        return self._lifecycle.update(
            self._task_id, stage=stage, progress=percent, message=STAGE_MESSAGES[stage], **changes
        )


class Lifecycle:
    """The store writes that move tasks; with `events`, each is published there too.

    The Redis store publishes its own writes (every API process follows them), so the Celery
    backend passes no `events`; the local backend's store is silent, so it passes its own.
    """

    def __init__(self, store: TaskStore, settings: Settings, events: TaskEvents | None = None) -> None:
        self.store = store
        self._settings = settings
        self._events = events
        self._downloads: dict[str, asyncio.Task[None]] = {}

    def update(self, task_id: str, **changes: Any) -> Task | None:
        """Apply changes; None when the task is gone (deleted meanwhile)."""
        task = self.store.update(task_id, **changes)
        if task is not None and self._events is not None:
            self._events.publish(task)
        return task

    def start(self, task_id: str, message: str = "Starting", **changes: Any) -> RunProgress | None:
        """Mark the task processing; the progress to report its stages with, None when it is gone."""
        # Progress carries on from the download, when there was one: it never goes backwards.
        task = self.update(task_id, status=TaskStatus.PROCESSING, started_at=utcnow(), message=message, **changes)
        return None if task is None else RunProgress(self, task)

    def requeue(self, task_id: str, message: str) -> None:
        self.update(task_id, status=TaskStatus.PENDING, progress=0.0, stage=None, started_at=None, message=message)

    def complete(self, task_id: str, output: PipelineOutput) -> None:
        message = "Transcription completed successfully"
        if output.note:
            message = f"Transcription completed; {output.note}"
        # One update: the result, status and times land together or not at all.
        self.update(
            task_id, status=TaskStatus.COMPLETED, progress=100.0, stage=None, message=message,
            completed_at=utcnow(), result=output.result,
        )  # fmt: skip

    def fail(self, task_id: str, error: str) -> None:
        logger.info("Task %s failed: %s", task_id, error)
        self.update(
            task_id, status=TaskStatus.FAILED, message="Transcription failed", error=error, completed_at=utcnow()
        )

    def fail_to_load(self, task_id: str, load_error: str) -> None:
        self.fail(
            task_id,
            f"The server could not load its speech model ({load_error}), so it cannot transcribe; "
            "tell the server's operator (GET /health shows the cause).",
        )

    def time_out(self, task_id: str, stage: Stage) -> None:
        self.fail(
            task_id,
            f"The {stage.value} stage took longer than the server's limit of "
            f"{self._settings.stage_timeout_seconds:g} s (STAGE_TIMEOUT_SECONDS); try a shorter file.",
        )

    def delete(self, task_id: str, owner: str, stop: Callable[[Task], None]) -> bool:
        """Remove the owner's task in any state, with its upload; False when there is none.

        A download stops here; `stop` is the backend's way to stop the task if a worker runs it."""
        task = self.store.get(task_id)
        if task is None or task.owner != owner:
            return False
        self.store.delete(task_id)
        if self._events is not None:
            self._events.publish(task, deleted=True)
        if (download := self._downloads.pop(task_id, None)) is not None:
            download.cancel()  # the download stops and removes what it wrote
        stop(task)
        task.job.audio_path.unlink(missing_ok=True)
        return True

    def download(self, task: Task, prepare: Prepare, queue: Callable[[Job], None]) -> None:
        """Fetch the task's input in the background, then `queue` its job; it counts as pending meanwhile."""

        async def fetch() -> None:
            try:
                job = await self.fetch_input(task, prepare)
            finally:
                self._downloads.pop(task.id, None)
            if job is not None:
                queue(job)

        self._downloads[task.id] = asyncio.create_task(fetch(), name=f"prepare-{task.id}")

    async def stop_downloads(self) -> list[str]:
        """Cancel the downloads under way; the ids of their tasks."""
        downloads = dict(self._downloads)
        for download in downloads.values():
            download.cancel()
        await asyncio.gather(*downloads.values(), return_exceptions=True)
        return list(downloads)

    async def fetch_input(self, task: Task, prepare: Prepare) -> Job | None:
        """Run a task's `prepare` as its downloading stage and record the job on the task.

        None when it failed (and the task with it), or when the task was deleted meanwhile.
        """
        tracker = ProgressTracker(task.job.progress_stages)

        def on_progress(fraction: float) -> None:
            percent = round(tracker.update(Stage.DOWNLOAD, fraction), 1)
            self.update(task.id, stage=Stage.DOWNLOAD, progress=percent, message=STAGE_MESSAGES[Stage.DOWNLOAD])

        try:
            job = await prepare(on_progress)
        except PrepareFailed as error:
            self.fail(task.id, str(error))
            return None
        except Exception:  # one task fails, the service goes on
            logger.exception("Preparing task %s failed", task.id)
            self.fail(task.id, "The audio could not be fetched because of an unexpected error; try again.")
            return None
        if self.update(task.id, job=job, stage=None, message="Waiting in the queue") is None:
            job.audio_path.unlink(missing_ok=True)  # deleted just as the download ended
            return None
        return job

    def expire(self) -> None:
        """Delete the tasks that ended more than TASK_TTL_HOURS ago, with their uploads."""
        ttl = timedelta(hours=self._settings.task_ttl_hours)
        for task in self.store.ended_before(utcnow() - ttl):
            if self.store.delete(task.id) is not None:
                if self._events is not None:
                    self._events.publish(task, deleted=True)
                task.job.audio_path.unlink(missing_ok=True)
                logger.info("Task %s expired after %s h", task.id, self._settings.task_ttl_hours)

    async def expire_forever(self, in_thread: bool = False) -> None:
        """Run `expire` for good; `in_thread` for a store whose calls block on the network."""
        ttl_seconds = self._settings.task_ttl_hours * 3600
        # Check often enough that a task outlives its TTL by at most a tenth of it (and by a minute at most).
        interval = min(max(ttl_seconds / 10, 0.2), 60.0)
        while True:
            try:
                if in_thread:
                    await asyncio.to_thread(self.expire)
                else:
                    self.expire()
            except Exception:  # the store away for a moment: try again next round
                logger.warning("Expiring ended tasks failed", exc_info=True)
            await asyncio.sleep(interval)
