"""TASK_BACKEND=celery, API side: tasks go to Redis and Celery; this process keeps no task state.

Any number of API processes may run side by side. Each one:
- submits with the limits checked and the task added in one Redis transaction, then sends
  the task id to Celery;
- deletes by removing the task (a running worker stops at its next progress step), revoking
  its message, and killing its worker process if it is still running after CANCEL_GRACE_SECONDS;
- reads the store's change stream (app/tasks/streams.py) from where it left off, so nothing
  written while it reconnected is missed, and passes the changes to its own SSE streams; after a
  reconnect it re-reads the tasks those follow. The listeners (metrics, stage costs) of one
  process per task see a task's changes; another process takes a task over when that one stops
  announcing itself (API_TAKEOVER_SECONDS), and tells its own listeners of an end the stopped one
  was not there to pass on, so each task's end is counted once;
- takes its share of the callbacks owed from the shared callback queue (app/outbound/webhooks.py);
- sweeps for tasks whose worker died (lease lapsed): requeued once, then failed;
- expires ended tasks after TASK_TTL_HOURS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

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
from app.tasks.streams import CallbackQueue, ChangeFeed, async_client, cancel_until_done

logger = logging.getLogger(__name__)

SWEEP_SECONDS = 5.0
WORKERS_UNSEEN = "the workers cannot be seen: the task store (Redis) cannot be reached"
WORKERS_SECONDS = 1.0
"""How often the workers' announcements are read: a worker that finished loading shows in /health within this."""
RECHECK_SECONDS = 5.0
"""How long a process trusts that another one handles a task's listeners before it looks again."""

ENDED = "ended"
"""What a task's listeners claim holds once they have been told of its end: nobody tells them again."""

# The listeners of a task: kept by the process that holds them, taken over when it no longer announces
# itself. 1: this process's; 0: another live process's; -1: told of the task's end already.
_CLAIM_LISTENERS = """
local holder = redis.call('get', KEYS[1])
if holder == ARGV[1] then return 1 end
if holder == ARGV[4] then return -1 end
if holder and redis.call('exists', ARGV[3] .. holder) == 1 then return 0 end
redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""
MINE, ANOTHERS, TOLD = 1, 0, -1


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
        self._mine: set[str] = set()
        self._others: dict[str, float] = {}
        """Tasks another live process handles the listeners of, with when that was last checked."""
        self._ends_elsewhere: dict[str, tuple[Task, bool]] = {}
        """Ends (task, deleted) of tasks whose listeners another process held when the end came: passed on
        here if that process stops before it marks them told (it may have died before it read them)."""
        self._ends_unmarked: set[str] = set()
        """Tasks whose end this process told its listeners of, not yet marked ENDED (Redis was away)."""
        self._loops: list[asyncio.Task[None]] = []
        self._stopping: set[asyncio.Task[None]] = set()
        self._workers: list[dict[str, Any]] = []
        self._workers_unseen = False
        # Connects on first use, on the event loop that uses it.
        self._async_redis = async_client(settings.redis_url)
        self._claim_listeners = self._async_redis.register_script(_CLAIM_LISTENERS)
        self._changes = ChangeFeed(settings.redis_url, self._store)
        self.callbacks: CallbackQueue | None = CallbackQueue(
            async_client(settings.redis_url), self._store, self._me, settings.api_takeover_seconds
        )
        """Callbacks owed, shared with the other API processes (app/outbound/webhooks.py takes them)."""

    async def start(self) -> None:
        self._loops = [
            asyncio.create_task(self._follow_changes(), name="changes"),
            asyncio.create_task(self._follow_workers(), name="workers"),
            asyncio.create_task(self._sweep_forever(), name="sweep"),
            asyncio.create_task(self._lifecycle.expire_forever(), name="retention"),
        ]

    async def stop(self) -> None:
        await cancel_until_done([*self._loops, *self._stopping])
        for task_id in await self._lifecycle.stop_background():  # no other process can take over a download
            await self._lifecycle.fail(task_id, "The server restarted while downloading audio_url; submit it again.")
        with contextlib.suppress(Exception):  # the others take over at once, not in API_TAKEOVER_SECONDS
            await self._threads.call(self._store.client.delete, self._store.key("api", self._me))
        await self._changes.close()
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
                task_id, "The task queue (Redis) could not be reached after the download; try again.", server_fault=True
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
        """Keep what the workers announce, so /health and the upload checks read it without waiting on Redis;
        and announce this process, which holds the listeners of the tasks it saw first."""
        while True:
            try:
                self._workers = await self._threads.call(self._coordination.workers)
                alive = int(self._settings.api_takeover_seconds * 1000)
                await self._threads.call(self._store.client.set, self._store.key("api", self._me), 1, px=alive)
                if self._workers_unseen:
                    logger.info("The workers' announcements can be read again")
                self._workers_unseen = False
            except Exception as error:  # noqa: BLE001 - Redis away: /health and /ready say so until it is back
                if not self._workers_unseen:
                    logger.warning("Could not read the workers' announcements: %s", error)
                self._workers_unseen = True
            await self._settle_ends()
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
        gap = False  # some change may not have reached this process's followers: Redis was out of reach
        while True:
            try:
                changes = await self._changes.read()
            except asyncio.CancelledError:
                raise
            except Exception:
                if not gap:
                    logger.warning("Lost the task change stream; reconnecting", exc_info=True)
                gap = True
                await asyncio.sleep(1.0)
                continue
            for task, deleted in changes:
                try:
                    await self._pass_on(task, deleted)
                except Exception:  # Redis away for a moment: the re-read below covers the followers
                    logger.warning("Could not pass on a change of task %s", task.id, exc_info=True)
                    gap = True
            if gap:
                try:
                    await self._reread_followed()
                    logger.info("Reading task changes again; re-read the tasks followed here")
                    gap = False
                except Exception:  # tried again after the next read
                    logger.warning("Could not re-read the tasks followed here", exc_info=True)

    async def _reread_followed(self) -> None:
        """After a gap: what each followed task is now, in case the stream no longer holds all it missed."""
        for task_id in self.events.followed():
            self.events.refresh(task_id, await self._threads.call(self._store.get, task_id))

    async def _pass_on(self, task: Task, deleted: bool) -> None:
        if task.status is TaskStatus.COMPLETED and not deleted:
            # The change stream leaves results out; whoever waits on the end reads it.
            current = await self._threads.call(self._store.get, task.id)
            if current is None:
                return  # deleted since: that change follows
            task.result = current.result
        ended = deleted or task.status in TERMINAL
        try:
            claim = await self._listeners_claim(task.id, ended)
        except Exception:  # the followers must not miss the change for it
            logger.warning("Could not tell who keeps the listeners of task %s", task.id, exc_info=True)
            claim = ANOTHERS
        if ended:
            self._mine.discard(task.id)
            self._others.pop(task.id, None)
            if claim == ANOTHERS:  # its holder may be dead already: `_settle_ends` sees to it
                self._ends_elsewhere[task.id] = (task, deleted)
        self.events.publish(task, deleted, notify_listeners=claim == MINE)
        if ended and claim == MINE:
            self._ends_unmarked.add(task.id)
            await self._mark_ends()

    async def _listeners_claim(self, task_id: str, ended: bool) -> int:
        """Whether this process passes the task's changes to its listeners (MINE): the first to see the
        task does, until it stops announcing itself, when the next to see a change takes over. An end
        is always checked in Redis, never from what this process saw a while ago."""
        if task_id in self._mine:
            return MINE
        if not ended and time.monotonic() - self._others.get(task_id, -RECHECK_SECONDS) < RECHECK_SECONDS:
            return ANOTHERS
        ttl = int(self._settings.task_ttl_hours * 3600) + 3600
        claim = self._store.key("listeners", task_id)
        args: list[str | int] = [self._me, ttl, self._store.key("api", ""), ENDED]
        answer = int(await self._claim_listeners(keys=[claim], args=args))
        if answer == MINE:
            self._mine.add(task_id)
            self._others.pop(task_id, None)
        elif answer == ANOTHERS:
            self._others[task_id] = time.monotonic()
        return answer

    async def _mark_ends(self) -> None:
        """Mark the ends this process told its listeners of, so that no other process tells its own."""
        for task_id in list(self._ends_unmarked):
            try:
                await self._async_redis.set(self._store.key("listeners", task_id), ENDED, keepttl=True)
            except Exception as error:  # noqa: BLE001 - marked on the next round
                logger.warning("Could not mark the end of task %s as counted: %s", task_id, error)
                return
            self._ends_unmarked.discard(task_id)

    async def _settle_ends(self) -> None:
        """Tell this process's listeners of the ends another process held but stopped before it marked."""
        await self._mark_ends()
        for task_id, (task, deleted) in list(self._ends_elsewhere.items()):
            try:
                claim = await self._listeners_claim(task_id, ended=True)
            except Exception as error:  # noqa: BLE001 - Redis away: the next round
                logger.warning("Could not check who counts the end of task %s: %s", task_id, error)
                return
            if claim == ANOTHERS:
                continue  # its holder lives: it tells its own listeners (or has, and will mark it)
            del self._ends_elsewhere[task_id]
            self._mine.discard(task_id)
            self._others.pop(task_id, None)
            if claim == MINE:
                logger.info("Counting the end of task %s for an API process that stopped", task_id)
                self.events.notify_listeners(task, deleted)
                self._ends_unmarked.add(task_id)
        await self._mark_ends()

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            try:
                await self._threads.call(self._sweep)
            except Exception:
                logger.warning("Sweep for tasks of dead workers failed", exc_info=True)

    def _sweep(self) -> None:
        """Requeue (once) or fail tasks left processing by a worker that died.

        Each write is conditional on the task still processing and its lease still absent, so a
        worker that takes the task meanwhile (or another API process's sweep) wins."""
        for task in self._store.unfinished():
            if task.status is not TaskStatus.PROCESSING or self._coordination.leased(task.id):
                continue
            unleased = (self._coordination.lease_key(task.id), None)
            if self._coordination.starts(task.id) >= MAX_ATTEMPTS:
                stopped = failed(STOPPED_TWICE, server_fault=True)
                if self._store.update_if(task.id, TaskStatus.PROCESSING, unleased, **stopped) is not None:
                    self._storage.discard_sync(task.job)
                continue
            retry = requeued("Its worker stopped unexpectedly; waiting to be retried on another worker")
            if self._store.update_if(task.id, TaskStatus.PROCESSING, unleased, **retry) is None:
                continue
            logger.warning("Task %s lost its worker (no lease for %s s); retrying it", task.id, LEASE_SECONDS)
            try:
                self._send(task.id)
            except Exception:
                # Not left pending with no message to run it: processing again, with no lease, so the
                # next sweep (of this process or another) tries again.
                logger.warning("Could not requeue task %s; the next sweep tries again", task.id, exc_info=True)
                self._store.update_if(task.id, TaskStatus.PENDING, unleased, status=TaskStatus.PROCESSING)
