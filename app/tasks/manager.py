"""Queues tasks and runs them on worker processes, at most MAX_CONCURRENT_TASKS at once.

Each concurrency slot is one consumer coroutine owning one worker process: the slots are
the semaphore, and the shared FIFO queue keeps pending tasks in arrival order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from app.pipeline.base import Job, PipelineFactory, PipelineInfo, Stage
from app.tasks.events import TaskEvents
from app.tasks.models import Task, TaskStatus, utcnow
from app.tasks.progress import STAGE_MESSAGES, ProgressTracker
from app.tasks.store import TaskStore
from app.tasks.worker_process import JobCancelled, JobFailed, WorkerDied, WorkerProcess

logger = logging.getLogger(__name__)


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


class PrepareFailed(Exception):
    """A task's input could not be fetched; the message is meant for the user."""


Prepare = Callable[[Callable[[float], None]], Awaitable[Job]]
"""Fetches a task's input in the API process (its audio_url), reporting the fraction done;
returns the job as the worker should see it (its probed duration filled in)."""


def check_limits(store: TaskStore, settings: Any, owner: str) -> None:
    """Raise OverCapacity when the owner's tasks or the queue are at their limit in `store`."""
    if store.count_active(owner) >= settings.max_tasks_per_key:
        raise TooManyTasks(settings.max_tasks_per_key)
    if store.count_by_status()[TaskStatus.PENDING] >= settings.max_queue_size:
        raise QueueFull(settings.max_queue_size)


async def fetch_input(
    task: Task, prepare: Prepare, store: TaskStore, update: Callable[..., object], fail: Callable[[str, str], None]
) -> Job | None:
    """Run a task's `prepare` as its downloading stage and record the job on the task.

    None when it failed (and the task with it), or when the task was deleted meanwhile.
    """
    tracker = ProgressTracker(task.job.progress_stages)

    def on_progress(fraction: float) -> None:
        percent = round(tracker.update(Stage.DOWNLOAD, fraction), 1)
        update(task.id, stage=Stage.DOWNLOAD, progress=percent, message=STAGE_MESSAGES[Stage.DOWNLOAD])

    try:
        job = await prepare(on_progress)
    except PrepareFailed as error:
        fail(task.id, str(error))
        return None
    except Exception:  # one task fails, the service goes on
        logger.exception("Preparing task %s failed", task.id)
        fail(task.id, "The audio could not be fetched because of an unexpected error; try again.")
        return None
    if store.update(task.id, job=job, stage=None, message="Waiting in the queue") is None:
        job.audio_path.unlink(missing_ok=True)  # deleted just as the download ended
        return None
    return job


class StageWatch:
    """Which stage a job is in and since when, from its progress events."""

    def __init__(self, stages: list[Stage]) -> None:
        self._stages = stages
        self.current = stages[0]
        self.since = time.monotonic()
        self.timed_out: Stage | None = None

    def report(self, stage: Stage, fraction: float) -> None:
        # A stage reports its fraction after doing the work: at 1.0 the next stage is running.
        index = self._stages.index(stage)
        running = self._stages[index + 1] if fraction >= 1.0 and index + 1 < len(self._stages) else stage
        if running != self.current:
            self.current, self.since = running, time.monotonic()


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
        self._preparing: dict[str, asyncio.Task[None]] = {}
        self._slots: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Pick up what a previous run left, then start the slots; models load while the API answers."""
        self._recover()
        self._slots = [asyncio.create_task(self._serve(worker), name=worker.name) for worker in self._workers]
        self._slots.append(asyncio.create_task(self._expire_forever(), name="retention"))

    async def stop(self) -> None:
        preparing = list(self._preparing.values())
        for slot in [*self._slots, *preparing]:
            slot.cancel()
        await asyncio.gather(*self._slots, *preparing, return_exceptions=True)
        await asyncio.gather(*(worker.stop() for worker in self._workers))
        if self._store.durable:
            return  # waiting uploads stay on disk: the next start requeues their tasks
        # Tasks live in memory: uploads still waiting would be orphaned by the restart.
        while not self._queue.empty():
            if (task := self._store.get(self._queue.get_nowait())) is not None:
                task.job.audio_path.unlink(missing_ok=True)

    def check_capacity(self, owner: str) -> None:
        """Refuse early, before an upload is saved; `submit` checks again atomically."""
        check_limits(self._store, self._settings, owner)

    def submit(self, job: Job, owner: str, prepare: Prepare | None = None) -> Task:
        """Queue a job; with `prepare`, the task waits (pending, stage downloading) until it has run."""
        # No await between the check and the add: concurrent uploads cannot both slip past a limit.
        self.check_capacity(owner)
        task = Task(job=job, owner=owner)
        if prepare is not None:
            task.stage, task.message = Stage.DOWNLOAD, STAGE_MESSAGES[Stage.DOWNLOAD]
        self._store.add(task)
        if prepare is None:
            self._queue.put_nowait(task.id)
        else:
            self._preparing[task.id] = asyncio.create_task(self._prepare(task, prepare), name=f"prepare-{task.id}")
        self.events.publish(task)
        return task

    async def _prepare(self, task: Task, prepare: Prepare) -> None:
        """Fetch the task's input, then queue it; pending tasks count against the queue meanwhile."""
        try:
            job = await fetch_input(task, prepare, self._store, self._update, self._fail)
        finally:
            self._preparing.pop(task.id, None)
        if job is None:
            return
        self._queue.put_nowait(task.id)
        self.events.publish(self._store.get(task.id) or task)

    def delete(self, task_id: str, owner: str) -> bool:
        """Remove a task in any state; a running one is told to stop, and killed if it does not."""
        task = self._store.get(task_id)
        if task is None or task.owner != owner:
            return False
        self._store.delete(task_id)
        self.events.publish(task, deleted=True)
        if (preparing := self._preparing.pop(task_id, None)) is not None:
            preparing.cancel()  # the download stops and removes what it wrote
        worker = self._running.get(task_id)
        if worker is not None:
            worker.cancel()
            asyncio.get_running_loop().call_later(
                self._settings.cancel_grace_seconds, self._kill_if_still_running, task_id, worker
            )
        task.job.audio_path.unlink(missing_ok=True)
        return True

    def _recover(self) -> None:
        """Requeue tasks a crash or restart left unfinished; fail those whose upload is gone."""
        for task in self._store.unfinished():
            if task.job.audio_path.exists():
                logger.info("Requeuing task %s left %s by the previous run", task.id, task.status.value)
                self._update(
                    task.id, status=TaskStatus.PENDING, progress=0.0, stage=None, started_at=None,
                    message="Requeued after a server restart",
                )  # fmt: skip
                self._queue.put_nowait(task.id)
            elif task.job.audio_url:
                self._fail(task.id, "The server restarted while downloading audio_url; submit it again.")
            else:
                self._fail(task.id, "The server restarted and this task's upload was lost; upload the file again.")

    async def _expire_forever(self) -> None:
        ttl = timedelta(hours=self._settings.task_ttl_hours)
        # Check often enough that a task outlives its TTL by at most a tenth of it (and by a minute at most).
        interval = min(max(ttl.total_seconds() / 10, 0.2), 60.0)
        while True:
            for task in self._store.ended_before(utcnow() - ttl):
                if self._store.delete(task.id) is not None:
                    self.events.publish(task, deleted=True)
                    task.job.audio_path.unlink(missing_ok=True)
                    logger.info("Task %s expired after %s h", task.id, self._settings.task_ttl_hours)
            await asyncio.sleep(interval)

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
            shutting_down = False
            try:
                await self._run(task, worker)
            except asyncio.CancelledError:
                shutting_down = True
                raise
            finally:
                del self._running[task_id]
                # A durable store requeues a task interrupted by shutdown, so its upload must stay.
                if not (shutting_down and self._store.durable):
                    task.job.audio_path.unlink(missing_ok=True)

    async def _run(self, task: Task, worker: WorkerProcess) -> None:
        if worker.load_error is not None:
            self._fail(
                task.id,
                f"The server could not load its speech model ({worker.load_error}), so it cannot transcribe; "
                "tell the server's operator (GET /health shows the cause).",
            )
            return
        # Progress carries on from the download, when there was one: it never goes backwards.
        self._update(task.id, status=TaskStatus.PROCESSING, started_at=utcnow(), message="Starting")
        tracker = ProgressTracker(task.job.progress_stages)
        watch = StageWatch(task.job.stages)

        def on_progress(stage: Stage, fraction: float) -> None:
            watch.report(stage, fraction)
            percent = tracker.update(stage, fraction)
            self._update(task.id, stage=stage, progress=round(percent, 1), message=STAGE_MESSAGES[stage])

        watchdog = asyncio.create_task(self._watch(watch, worker))
        try:
            output = await worker.run(task.job, on_progress)
        except JobCancelled:
            logger.info("Task %s stopped after deletion", task.id)
        except JobFailed as error:
            self._fail(task.id, str(error))
        except WorkerDied:
            if watch.timed_out is not None:
                limit = self._settings.stage_timeout_seconds
                self._fail(
                    task.id,
                    f"The {watch.timed_out.value} stage took longer than the server's limit of "
                    f"{limit:g} s (STAGE_TIMEOUT_SECONDS); try a shorter file.",
                )
            elif self._store.get(task.id) is not None:
                self._fail(task.id, "The worker process stopped unexpectedly (out of memory?); try a shorter file.")
            task.job.audio_path.unlink(missing_ok=True)  # now, not after the models reload
            with contextlib.suppress(Exception):
                await worker.stop()
            await worker.start()
        else:
            message = "Transcription completed successfully"
            if output.note:
                message = f"Transcription completed; {output.note}"
            # One update: the result, status and times land together or not at all.
            self._update(
                task.id,
                status=TaskStatus.COMPLETED,
                progress=100.0,
                stage=None,
                message=message,
                completed_at=utcnow(),
                result=output.result,
            )
        finally:
            watchdog.cancel()

    async def _watch(self, watch: StageWatch, worker: WorkerProcess) -> None:
        """Kill the worker when one stage runs past STAGE_TIMEOUT_SECONDS."""
        limit = self._settings.stage_timeout_seconds
        while True:
            await asyncio.sleep(min(limit / 4, 1.0))
            if time.monotonic() - watch.since > limit:
                watch.timed_out = watch.current
                logger.warning("Stage %s ran past %s s; stopping %s", watch.current.value, limit, worker.name)
                worker.kill()
                return

    def _fail(self, task_id: str, error: str) -> None:
        logger.info("Task %s failed: %s", task_id, error)
        self._update(
            task_id, status=TaskStatus.FAILED, message="Transcription failed", error=error, completed_at=utcnow()
        )

    def _update(self, task_id: str, **changes: Any) -> None:
        if (task := self._store.update(task_id, **changes)) is not None:
            self.events.publish(task)
