"""Queues tasks and runs them on worker processes, at most MAX_CONCURRENT_TASKS at once.

Each concurrency slot is one consumer coroutine owning one worker process: the slots are
the semaphore, and the shared FIFO queue keeps pending tasks in arrival order. A worker killed
mid-task is replaced by a loaded standby when there is one (standby.py), so the next task need
not wait for the models to load. The store
writes that move a task are the lifecycle's (lifecycle.py), shared with the Celery backend;
this module keeps how a job reaches a worker process and how it is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from app.config import Settings
from app.pipeline.base import Job, PipelineFactory, Stage
from app.tasks.async_store import AsyncTaskStore
from app.tasks.events import TaskEvents
from app.tasks.lifecycle import Lifecycle, Prepare, StageWatch, WorkerState
from app.tasks.limits import check_limits
from app.tasks.models import Task
from app.tasks.progress import STAGE_MESSAGES
from app.tasks.standby import StandbyWorkers
from app.tasks.streams import CallbackQueue
from app.tasks.worker_process import JobCancelled, JobFailed, WorkerDied, WorkerProcess

logger = logging.getLogger(__name__)

STORE_RETRY_SECONDS = 1.0
"""How long a slot waits before its next task when the store could not be read."""
STORE_FAILED = "The server's task store failed while this task ran (see the server's log); upload the file again."


class TaskManager:
    def __init__(
        self, store: AsyncTaskStore, factory: PipelineFactory, settings: Settings, events: TaskEvents | None = None
    ) -> None:
        self._store = store
        # Every write is also published here: SSE streams, metrics and webhooks follow it.
        self.events = events or TaskEvents()
        self.callbacks: CallbackQueue | None = None  # callbacks follow `events`
        self._lifecycle = Lifecycle(store, settings, self.events)
        self._settings = settings
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._admission = asyncio.Lock()
        self._workers = [
            WorkerProcess(f"worker-{slot}", factory, settings) for slot in range(settings.max_concurrent_tasks)
        ]
        self._standby = StandbyWorkers(factory, settings)
        self._running: dict[str, WorkerProcess] = {}
        self._slots: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Pick up what a previous run left, then start the slots; models load while the API answers."""
        await self._recover()
        self._slots = [
            asyncio.create_task(self._serve(slot), name=f"slot-{slot}") for slot in range(len(self._workers))
        ]
        self._slots.append(asyncio.create_task(self._lifecycle.expire_forever(), name="retention"))

    async def stop(self) -> None:
        for slot in self._slots:
            slot.cancel()
        await asyncio.gather(*self._slots, self._lifecycle.stop_background(), return_exceptions=True)
        await asyncio.gather(*(worker.stop() for worker in self._workers), self._standby.stop())
        if self._store.durable:
            return  # waiting uploads stay on disk: the next start requeues their tasks
        # Tasks live in memory: uploads still waiting would be orphaned by the restart.
        while not self._queue.empty():
            if (task := await self._store.get(self._queue.get_nowait())) is not None:
                task.job.audio_path.unlink(missing_ok=True)

    async def check_capacity(self, owner: str) -> None:
        """Refuse early, before an upload is saved; `submit` checks again atomically."""
        await check_limits(self._store, self._settings, owner)

    async def submit(self, job: Job, owner: str, prepare: Prepare | None = None) -> Task:
        """Queue a job; with `prepare`, the task waits (pending, stage downloading) until it has run."""
        # One submit at a time between the check and the add: concurrent uploads cannot both slip past a limit.
        async with self._admission:
            await self.check_capacity(owner)
            task = Task(job=job, owner=owner)
            if prepare is not None:
                task.stage, task.message = Stage.DOWNLOAD, STAGE_MESSAGES[Stage.DOWNLOAD]
            await self._store.add(task)
        if prepare is None:
            self._queue.put_nowait(task.id)
        else:
            self._lifecycle.download(task, prepare, lambda _job: self._enqueue(task.id))
        self.events.publish(task)
        return task

    async def _enqueue(self, task_id: str) -> None:
        self._queue.put_nowait(task_id)

    async def delete(self, task_id: str, owner: str) -> bool:
        return await self._lifecycle.delete(task_id, owner, self._stop)

    async def _stop(self, task: Task) -> None:
        """A running task's worker is told to stop, and killed if it does not."""
        worker = self._running.get(task.id)
        if worker is not None:
            worker.cancel()
            asyncio.get_running_loop().call_later(
                self._settings.cancel_grace_seconds, self._kill_if_still_running, task.id, worker
            )

    async def _recover(self) -> None:
        """Requeue tasks a crash or restart left unfinished; fail those whose upload is gone."""
        for task in await self._store.unfinished():
            if task.job.audio_path.exists():
                logger.info("Requeuing task %s left %s by the previous run", task.id, task.status.value)
                await self._lifecycle.requeue(task.id, "Requeued after a server restart")
                self._queue.put_nowait(task.id)
            elif task.job.audio_url:
                await self._lifecycle.fail(
                    task.id, "The server restarted while downloading audio_url; submit it again."
                )
            else:
                await self._lifecycle.fail(
                    task.id, "The server restarted and this task's upload was lost; upload the file again."
                )

    def worker_state(self) -> WorkerState:
        info = next((worker.info for worker in self._workers if worker.info is not None), None)
        errors = [worker.load_error for worker in self._workers if worker.load_error]
        loaded = all(worker.info is not None for worker in self._workers)
        models = {worker.name: list(worker.info.loaded_models) for worker in self._workers if worker.info}
        failures = {name: error for worker in self._workers if worker.info for name, error in worker.info.model_errors}
        return WorkerState(
            info=info, loaded=loaded, load_error=errors[0] if errors else None, loaded_models=models,
            model_errors=failures,
        )  # fmt: skip

    def _kill_if_still_running(self, task_id: str, worker: WorkerProcess) -> None:
        if self._running.get(task_id) is worker:
            worker.kill()

    async def _serve(self, slot: int) -> None:
        await self._workers[slot].start()
        # The last slot to finish loading starts the standbys, so that they do not slow the slots' own loading.
        finished = all(worker.info is not None or worker.load_error is not None for worker in self._workers)
        loaded = next((worker.info for worker in self._workers if worker.info is not None), None)
        if finished and loaded is not None:
            self._standby.start(loaded.device)
        while True:
            task_id = await self._queue.get()
            try:
                task = await self._store.get(task_id)
            except Exception:
                # The store away: the task waits its turn again, and this slot carries on.
                logger.warning("Could not read task %s; requeued", task_id, exc_info=True)
                self._queue.put_nowait(task_id)
                await asyncio.sleep(STORE_RETRY_SECONDS)
                continue
            if task is None:  # deleted while pending
                continue
            worker = self._workers[slot]
            worker.take_next()
            self._running[task_id] = worker
            shutting_down = False
            try:
                await self._run(task, slot)
            except asyncio.CancelledError:
                shutting_down = True
                raise
            except Exception:
                # A store write failed mid-task. The slot lives on: the task fails once the store takes it,
                # and the worker, which may still be running the job, is replaced so that nothing of it
                # reaches the next task.
                logger.exception("Task %s: the task store failed while it ran", task_id)
                self._lifecycle.fail_when_stored(task_id, STORE_FAILED)
                worker.kill()
                await self._replace(slot)
            finally:
                del self._running[task_id]
                # A durable store requeues a task interrupted by shutdown, so its upload must stay.
                if not (shutting_down and self._store.durable):
                    task.job.audio_path.unlink(missing_ok=True)

    async def _run(self, task: Task, slot: int) -> None:
        worker = self._workers[slot]
        if worker.load_error is not None:
            await self._lifecycle.fail_to_load(task.id, worker.load_error)
            return
        progress = await self._lifecycle.start(task)
        if progress is None:
            return  # deleted just now
        watchdog = asyncio.create_task(self._watch(progress.watch, worker))

        async def report(stage: Stage, fraction: float) -> None:
            await self._lifecycle.update(task.id, **progress.step(stage, fraction))

        try:
            await self._lifecycle.complete(task.id, await worker.run(task.job, report))
        except JobCancelled:
            logger.info("Task %s stopped after deletion", task.id)
        except JobFailed as error:
            await self._lifecycle.fail(task.id, str(error), error.server_fault)
        except WorkerDied:
            if progress.watch.timed_out is not None:
                await self._lifecycle.time_out(task.id, progress.watch.timed_out)
            elif await self._store.get(task.id) is not None:
                await self._lifecycle.fail(
                    task.id,
                    "The worker process stopped unexpectedly (out of memory?); try a shorter file.",
                    server_fault=True,
                )
            task.job.audio_path.unlink(missing_ok=True)  # now, not after the models reload
            await self._replace(slot)
        finally:
            watchdog.cancel()

    async def _replace(self, slot: int) -> None:
        """Put a loaded worker in the place of the slot's dead one: a standby at once, if there is
        one, else the dead one restarted (the next task waits while it loads the models)."""
        dead = self._workers[slot]
        with contextlib.suppress(Exception):
            await dead.stop()
        standby = await self._standby.take(dead.name)
        if standby is None:
            await dead.start()
        else:
            self._workers[slot] = standby

    async def _watch(self, watch: StageWatch, worker: WorkerProcess) -> None:
        """Kill the worker when one stage runs past STAGE_TIMEOUT_SECONDS."""
        limit = self._settings.stage_timeout_seconds
        while True:
            await asyncio.sleep(min(limit / 4, 1.0))
            if watch.overdue(limit):
                watch.timed_out = watch.current
                logger.warning("Stage %s ran past %s s; stopping %s", watch.current.value, limit, worker.name)
                worker.kill()
                return
