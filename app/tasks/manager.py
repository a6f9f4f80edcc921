"""Queues tasks and runs them on worker processes, at most MAX_CONCURRENT_TASKS at once.

Each concurrency slot is one consumer coroutine owning one worker process: the slots are
the semaphore, and the shared FIFO queue keeps pending tasks in arrival order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from app.pipeline.base import Job, PipelineFactory, PipelineInfo, Stage
from app.tasks.events import TaskEvents
from app.tasks.models import Task, TaskStatus, utcnow
from app.tasks.progress import STAGE_MESSAGES, ProgressTracker
from app.tasks.store import TaskStore
from app.tasks.worker import JobCancelled, JobFailed, WorkerDied, WorkerProcess

logger = logging.getLogger(__name__)


@dataclass
class WorkerState:
    """What `/health` shows about the models."""

    info: PipelineInfo | None
    loaded: bool
    load_error: str | None


class TaskManager:
    def __init__(
        self, store: TaskStore, factory: PipelineFactory, settings: Any, events: TaskEvents | None = None
    ) -> None:
        self._store = store
        # Every write below is also published here: SSE streams, metrics and webhooks follow it.
        self.events = events or TaskEvents()
        self._settings = settings
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._workers = [
            WorkerProcess(f"worker-{slot}", factory, settings) for slot in range(settings.max_concurrent_tasks)
        ]
        self._running: dict[str, WorkerProcess] = {}
        self._slots: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start the slots; models load in the background while the API already answers."""
        self._slots = [asyncio.create_task(self._serve(worker), name=worker.name) for worker in self._workers]

    async def stop(self) -> None:
        for slot in self._slots:
            slot.cancel()
        await asyncio.gather(*self._slots, return_exceptions=True)
        await asyncio.gather(*(worker.stop() for worker in self._workers))
        # Tasks live in memory: uploads still waiting would be orphaned by the restart.
        while not self._queue.empty():
            if (task := self._store.get(self._queue.get_nowait())) is not None:
                task.job.audio_path.unlink(missing_ok=True)

    def submit(self, job: Job) -> Task:
        task = Task(job=job)
        self._store.add(task)
        self._queue.put_nowait(task.id)
        self.events.publish(task)
        return task

    def delete(self, task_id: str) -> bool:
        """Remove a task in any state; a running one is told to stop, and killed if it does not."""
        task = self._store.delete(task_id)
        if task is None:
            return False
        self.events.publish(task, deleted=True)
        worker = self._running.get(task_id)
        if worker is not None:
            worker.cancel()
            asyncio.get_running_loop().call_later(
                self._settings.cancel_grace_seconds, self._kill_if_still_running, task_id, worker
            )
        task.job.audio_path.unlink(missing_ok=True)
        return True

    def worker_state(self) -> WorkerState:
        info = next((worker.info for worker in self._workers if worker.info is not None), None)
        errors = [worker.load_error for worker in self._workers if worker.load_error]
        loaded = all(worker.info is not None for worker in self._workers)
        return WorkerState(info=info, loaded=loaded, load_error=errors[0] if errors else None)

    def _kill_if_still_running(self, task_id: str, worker: WorkerProcess) -> None:
        if self._running.get(task_id) is worker:
            worker.kill()

    async def _serve(self, worker: WorkerProcess) -> None:
        await worker.start()
        while True:
            task_id = await self._queue.get()
            task = self._store.get(task_id)
            if task is None:  # deleted while pending
                continue
            self._running[task_id] = worker
            try:
                await self._run(task, worker)
            finally:
                del self._running[task_id]
                task.job.audio_path.unlink(missing_ok=True)

    async def _run(self, task: Task, worker: WorkerProcess) -> None:
        if worker.load_error is not None:
            self._fail(task.id, f"The speech model could not be loaded: {worker.load_error}")
            return
        self._update(task.id, status=TaskStatus.PROCESSING, started_at=utcnow(), message="Starting", progress=0.0)
        tracker = ProgressTracker(task.job.stages)

        def on_progress(stage: Stage, fraction: float) -> None:
            percent = tracker.update(stage, fraction)
            self._update(task.id, stage=stage, progress=round(percent, 1), message=STAGE_MESSAGES[stage])

        try:
            output = await worker.run(task.job, on_progress)
        except JobCancelled:
            logger.info("Task %s stopped after deletion", task.id)
        except JobFailed as error:
            self._fail(task.id, str(error))
        except WorkerDied:
            if self._store.get(task.id) is not None:
                self._fail(task.id, "The worker process stopped unexpectedly (out of memory?); try a shorter file.")
            with contextlib.suppress(Exception):
                await worker.stop()
            await worker.start()
        else:
            message = "Transcription completed successfully"
            if output.note:
                message = f"Transcription completed; {output.note}"
            self._update(
                task.id,
                status=TaskStatus.COMPLETED,
                progress=100.0,
                stage=None,
                message=message,
                completed_at=utcnow(),
                result=output.result,
            )

    def _fail(self, task_id: str, error: str) -> None:
        logger.info("Task %s failed: %s", task_id, error)
        self._update(
            task_id, status=TaskStatus.FAILED, message="Transcription failed", error=error, completed_at=utcnow()
        )

    def _update(self, task_id: str, **changes: Any) -> None:
        if (task := self._store.update(task_id, **changes)) is not None:
            self.events.publish(task)
