"""TASK_BACKEND=celery, API side: tasks go to Redis and Celery; this process keeps no task state.

Any number of API processes may run side by side. Each one:
- submits with the limits checked and the task added in one Redis transaction, then sends
  the task id to Celery;
- deletes by removing the task (a running worker stops at its next progress step), revoking
  its message, and killing its worker process if it is still running after CANCEL_GRACE_SECONDS;
- follows the store's change channel (Redis pub/sub) and passes changes to its own SSE
  streams; the listeners (metrics, webhooks) of one process per task see them, so a webhook
  is sent once however many API processes run;
- sweeps for tasks whose worker died (lease lapsed): requeued once, then failed;
- expires ended tasks after TASK_TTL_HOURS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Any

import redis.asyncio

from app.config import Settings
from app.pipeline.base import Job, PipelineInfo, Stage
from app.storage import Storage
from app.tasks.async_store import AsyncTaskStore
from app.tasks.celery_app import TASK_NAME, make_celery
from app.tasks.coordination import LEASE_SECONDS, MAX_ATTEMPTS, STOPPED_TWICE, Coordination
from app.tasks.events import TaskEvents
from app.tasks.lifecycle import Lifecycle, Prepare, WorkerState, failed, requeued
from app.tasks.limits import QueueFull, QueueUnreachable, TooManyStoredTasks, TooManyTasks, check_limits
from app.tasks.models import TERMINAL, Task, TaskStatus
from app.tasks.progress import STAGE_MESSAGES
from app.tasks.redis_store import Admission, RedisTaskStore

logger = logging.getLogger(__name__)

SWEEP_SECONDS = 5.0
WORKERS_UNSEEN = "the workers cannot be seen: the task store (Redis) cannot be reached"
WORKERS_SECONDS = 1.0
"""How often the workers' announcements are read: a worker that finished loading shows in /health within this."""


class CeleryDispatcher:
    def __init__(
        self,
        store: AsyncTaskStore,
        settings: Settings,
        events: TaskEvents | None = None,
        storage: Storage | None = None,
    ) -> None:
        assert isinstance(store.engine, RedisTaskStore)  # noqa: S101 - this backend is made with a Redis store
        self._store = store.engine
        self._threads = store.threads
        """Every call to Redis but the change channel's runs here, off the event loop."""
        self._settings = settings
        self.events = events or TaskEvents()
        # The store publishes its own writes; `_follow_changes` passes them on to `events`.
        self._lifecycle = Lifecycle(store, settings, storage=storage)
        self._storage = self._lifecycle.storage
        self._celery = make_celery(settings)
        self._coordination = Coordination(self._store.client)
        self._me = uuid.uuid4().hex
        self._mine: dict[str, bool] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._stopping: set[asyncio.Task[None]] = set()
        self._workers: list[dict[str, Any]] = []
        self._workers_unseen = False
        # Connects on first use, on the event loop that uses it.
        self._async_redis = redis.asyncio.Redis.from_url(settings.redis_url, decode_responses=True)

    async def start(self) -> None:
        self._loops = [
            asyncio.create_task(self._follow_changes(), name="changes"),
            asyncio.create_task(self._follow_workers(), name="workers"),
            asyncio.create_task(self._sweep_forever(), name="sweep"),
            asyncio.create_task(self._lifecycle.expire_forever(), name="retention"),
        ]

    async def stop(self) -> None:
        for loop in [*self._loops, *self._stopping]:
            loop.cancel()
        await asyncio.gather(*self._loops, *self._stopping, return_exceptions=True)
        for task_id in await self._lifecycle.stop_downloads():  # no other process can take over a download
            await self._lifecycle.fail(task_id, "The server restarted while downloading audio_url; submit it again.")
        await self._async_redis.aclose()
        self._celery.close()

    async def check_capacity(self, owner: str) -> None:
        await check_limits(self._lifecycle.store, self._settings, owner)

    async def submit(self, job: Job, owner: str, prepare: Prepare | None = None) -> Task:
        """Add the task within the limits and send it to Celery; with `prepare`, once that has fetched its input."""
        task = Task(job=job, owner=owner)
        if prepare is not None:
            task.stage, task.message = Stage.DOWNLOAD, STAGE_MESSAGES[Stage.DOWNLOAD]
        settings = self._settings
        limits = (settings.max_queue_size, settings.max_tasks_per_key, settings.max_stored_tasks_per_key)
        match await self._threads.call(self._store.add_within_limits, task, *limits):
            case Admission.KEY_FULL:
                raise TooManyTasks(self._settings.max_tasks_per_key)
            case Admission.KEY_STORE_FULL:
                raise TooManyStoredTasks(self._settings.max_stored_tasks_per_key)
            case Admission.QUEUE_FULL:
                raise QueueFull(self._settings.max_queue_size)
        if prepare is not None:
            self._lifecycle.download(task, prepare, lambda job: self._send_downloaded(task.id, job))
            return task
        try:
            await self._threads.call(self._send, task.id)
        except Exception as error:
            logger.error("Could not queue task %s: %s", task.id, error)
            with contextlib.suppress(Exception):
                await self._threads.call(self._store.delete, task.id)  # not left pending with no message to run it
            raise QueueUnreachable from error
        return task

    async def _send_downloaded(self, task_id: str, job: Job) -> None:
        try:
            await self._threads.call(self._send, task_id)
        except Exception:
            logger.exception("Could not queue task %s", task_id)
            await self._lifecycle.fail(
                task_id, "The task queue (Redis) could not be reached after the download; try again."
            )
            await self._storage.discard(job)

    def _send(self, task_id: str) -> None:
        # The Celery id is the task id, so a revoke names it.
        self._celery.send_task(TASK_NAME, args=[task_id], task_id=task_id)

    async def delete(self, task_id: str, owner: str) -> bool:
        return await self._lifecycle.delete(task_id, owner, self._stop)

    async def _stop(self, task: Task) -> None:
        # A waiting message is dropped by the workers; a running task stops at its next progress step
        # (its worker finds the task gone), so a revoke that cannot be sent only costs the kill below.
        try:
            await self._threads.call(self._celery.control.revoke, task.id)
        except Exception as error:  # noqa: BLE001 - the task is deleted already; the broker is away
            logger.warning("Could not revoke task %s: %s", task.id, error)
        if task.status is TaskStatus.PROCESSING:
            stopping = asyncio.create_task(self._kill_if_still_running(task.id), name=f"stop-{task.id}")
            self._stopping.add(stopping)
            stopping.add_done_callback(self._stopping.discard)

    async def _kill_if_still_running(self, task_id: str) -> None:
        await asyncio.sleep(self._settings.cancel_grace_seconds)
        try:
            if await self._threads.call(self._coordination.leased, task_id):
                logger.warning("Task %s did not stop after deletion; killing its worker process", task_id)
                await self._threads.call(self._celery.control.revoke, task_id, terminate=True, signal="SIGKILL")
        except Exception as error:  # noqa: BLE001 - Redis away: the worker stops at its next step instead
            logger.warning("Could not stop the worker of deleted task %s: %s", task_id, error)

    async def _follow_workers(self) -> None:
        """Keep what the workers announce, so /health and the upload checks read it without waiting on Redis."""
        while True:
            try:
                self._workers = await self._threads.call(self._coordination.workers)
                if self._workers_unseen:
                    logger.info("The workers' announcements can be read again")
                self._workers_unseen = False
            except Exception as error:  # noqa: BLE001 - Redis away: /health and /ready say so until it is back
                if not self._workers_unseen:
                    logger.warning("Could not read the workers' announcements: %s", error)
                self._workers_unseen = True
            await asyncio.sleep(WORKERS_SECONDS)

    def worker_state(self) -> WorkerState:
        if self._workers_unseen:
            return WorkerState(info=None, loaded=False, load_error=WORKERS_UNSEEN)
        workers = self._workers
        loaded = [worker for worker in workers if worker.get("model")]
        errors = [worker["error"] for worker in workers if worker.get("error")]
        info = None
        if loaded:
            first = loaded[0]
            info = PipelineInfo(
                model=first["model"], device=first["device"], diarizer=first["diarizer"],
                multilingual=first.get("multilingual", True),
            )  # fmt: skip
        models = {worker["name"]: list(worker.get("loaded_models", [])) for worker in loaded}
        failures = {name: error for worker in loaded for name, error in worker.get("model_errors", [])}
        return WorkerState(
            info=info, loaded=bool(loaded), load_error=errors[0] if errors and not loaded else None,
            loaded_models=models, model_errors=failures,
        )  # fmt: skip

    async def _follow_changes(self) -> None:
        while True:
            try:
                async with self._async_redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self._store.channel)
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            await self._pass_on(json.loads(message["data"]))
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("Lost the task change channel; reconnecting", exc_info=True)
                await asyncio.sleep(1.0)

    async def _pass_on(self, change: dict[str, Any]) -> None:
        task, deleted = self._store.load(change["task"]), bool(change["deleted"])
        if task is None:
            return
        mine = self._mine.get(task.id)
        if mine is None:
            # The first API process to see a task handles its listeners for good.
            claim = self._store.key("listeners", task.id)
            ttl = int(self._settings.task_ttl_hours * 3600) + 3600
            mine = bool(await self._async_redis.set(claim, self._me, nx=True, ex=ttl))
            mine = mine or await self._async_redis.get(claim) == self._me
            self._mine[task.id] = mine
        if deleted or task.status in TERMINAL:
            del self._mine[task.id]
        self.events.publish(task, deleted, notify_listeners=mine)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            try:
                await self._threads.call(self._sweep)
            except Exception:
                logger.warning("Sweep for tasks of dead workers failed", exc_info=True)

    def _sweep(self) -> None:
        """Requeue (once) or fail tasks left processing by a worker that died."""
        for task in self._store.unfinished():
            if task.status is not TaskStatus.PROCESSING or self._coordination.leased(task.id):
                continue
            if self._coordination.starts(task.id) >= MAX_ATTEMPTS:
                if self._store.update_if(task.id, TaskStatus.PROCESSING, **failed(STOPPED_TWICE)) is not None:
                    self._storage.discard_sync(task.job)
                continue
            retry = requeued("Its worker stopped unexpectedly; waiting to be retried on another worker")
            if self._store.update_if(task.id, TaskStatus.PROCESSING, **retry) is not None:
                logger.warning("Task %s lost its worker (no lease for %s s); retrying it", task.id, LEASE_SECONDS)
                self._send(task.id)
