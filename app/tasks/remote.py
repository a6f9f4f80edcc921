"""TASK_BACKEND=celery, worker side: runs a task from the Redis store on this process's pipeline.

One RemoteRunner per Celery pool process: it loads the models once and keeps them. A run
holds the task's lease (app/tasks/coordination.py) and renews it from a heartbeat thread,
which also enforces STAGE_TIMEOUT_SECONDS. Progress is written to the store with the same
stage weights as the local backend; a deleted task is noticed at the next progress step
(the store refuses the write) and the pipeline unwinds there.

Every write is conditional on the run still holding the task's lease (its token) and the task
being in the state the run expects: a worker whose lease lapsed (stalled, or cut off from Redis)
while the API's sweep requeued or failed the task writes nothing over that, and leaves the upload
to the run that now owns the task. The upload is removed only once this run has written an end
(or the task is gone).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import socket
import threading
import time
import traceback
import uuid
from typing import Any

from redis.exceptions import LockError
from redis.lock import Lock

from app.config import Settings
from app.pipeline.base import Pipeline, PipelineError, PipelineFactory, Stage
from app.storage import StorageUnavailable, UploadMissing, make_storage
from app.tasks.coordination import MAX_ATTEMPTS, RENEW_SECONDS, STOPPED_TWICE, Coordination
from app.tasks.files import sweep_orphans
from app.tasks.lifecycle import (
    RunProgress,
    StageWatch,
    completed,
    failed,
    load_failure,
    started,
    timeout_failure,
)
from app.tasks.models import ACTIVE, TERMINAL, Task, TaskStatus
from app.tasks.redis_store import RedisTaskStore
from app.tasks.worker_process import WORKER_NICENESS, JobCancelled, public_message

logger = logging.getLogger(__name__)


class RemoteRunner:
    def __init__(self, settings: Settings, factory: PipelineFactory) -> None:
        # As in the local backend: an API on the same machine stays responsive while models compute.
        os.nice(WORKER_NICENESS)
        self._settings = settings
        self.store = RedisTaskStore.from_url(settings.redis_url, settings.upload_dir)
        self.storage = make_storage(settings)
        if settings.storage_url is not None:
            # Scratch copies of objects that an earlier process on this machine was killed holding.
            sweep_orphans(settings.upload_dir, self._live, 0.0)
        self.coordination = Coordination(self.store.client)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._state: dict[str, Any] = {
            "name": self.name, "model": None, "device": None, "diarizer": None, "multilingual": True,
        }  # fmt: skip
        self._pipeline: Pipeline | None = None
        try:
            self._pipeline = factory(settings)
            # Celery starts taking tasks once this returns: load everything now, not on the first job.
            self._pipeline.finish_loading()
        except Exception as error:
            logger.exception("Could not load the pipeline")
            self._state["error"] = public_message(str(error) or type(error).__name__)
        else:
            info = self._pipeline.info()
            self._state.update(
                model=info.model, device=info.device, diarizer=info.diarizer, multilingual=info.multilingual
            )
            logger.info("%s ready: model %s on %s", self.name, info.model, info.device)
        threading.Thread(target=self._announce_forever, name="announce", daemon=True).start()
        if self._pipeline is not None:
            threading.Thread(target=self._follow_models, args=(self._pipeline,), name="models", daemon=True).start()

    def _announce_forever(self) -> None:
        # Never waits on the pipeline: a model loading or downloading for a request holds the model
        # manager's lock for minutes, and a worker that stopped announcing would vanish from /health.
        while True:
            with contextlib.suppress(Exception):  # Redis away for a moment: try again next round
                self.coordination.announce(self.name, dict(self._state))
            time.sleep(RENEW_SECONDS)

    def _follow_models(self, pipeline: Pipeline) -> None:
        """Unload idle models, and keep what the announcements say about the loaded ones."""
        while True:
            with contextlib.suppress(Exception):  # a failure here must not end the thread
                pipeline.unload_idle()
                info = pipeline.info()
                self._state = {
                    **self._state, "loaded_models": list(info.loaded_models), "model_errors": list(info.model_errors),
                }  # fmt: skip
            time.sleep(RENEW_SECONDS)

    def run(self, task_id: str) -> None:
        task = self.store.get(task_id)
        if task is None or task.status in TERMINAL:
            return  # deleted, or finished by an earlier delivery of the same message
        lease = self.coordination.lease(task_id)
        # The token names this process, so an operator (or a test) can see which one runs the task.
        token = f"{self.name}/{uuid.uuid4().hex}"
        taken = lease.acquire(blocking=False, token=token)
        if not taken and self._holder_is_dead(task_id):
            taken = lease.acquire(blocking=False, token=token)
        if not taken:
            logger.info("Task %s is already running on another worker", task_id)
            return
        held = (self.coordination.lease_key(task_id), token)
        try:
            keep = self._settings.task_ttl_hours * 3600
            if self.coordination.count_start(task_id, keep) > MAX_ATTEMPTS:
                self._end(task, held, failed(STOPPED_TWICE, server_fault=True))
                return
            self._execute(task, lease, held)
        finally:
            with contextlib.suppress(LockError):
                lease.release()

    def _end(self, task: Task, held: tuple[str, str], changes: dict[str, Any]) -> bool:
        """Write the task's end while it is still this run's, then remove its upload; False when it was not."""
        if changes["status"] is TaskStatus.FAILED:
            logger.info("Task %s failed: %s", task.id, changes["error"])
        if self.store.update_if(task.id, ACTIVE, held, **changes) is None:
            logger.warning("Task %s is no longer this worker's (deleted, or retried after its lease lapsed)", task.id)
            return False
        self.storage.discard_sync(task.job)
        return True

    def _live(self, task_id: str) -> bool:
        task = self.store.get(task_id)
        return task is not None and task.status not in TERMINAL

    def _holder_is_dead(self, task_id: str) -> bool:
        """Celery redelivers at once when a pool process dies; on the same host its lease need not
        lapse first. Breaks the lease when its holder is a process of this host that is gone."""
        token = self.coordination.holder(task_id)
        host, _, rest = (token or "").partition(":")
        pid = rest.partition("/")[0]
        if token is None or host != socket.gethostname() or not pid.isdigit():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            self.coordination.break_lease(task_id, token)
            return True
        except PermissionError:
            return False  # alive, another user's
        return False

    def _execute(self, task: Task, lease: Lock, held: tuple[str, str]) -> None:
        if self._pipeline is None:
            self._end(task, held, failed(load_failure(self._state["error"]), server_fault=True))
            return
        retried = self.coordination.starts(task.id) > 1
        # Progress carries on from an audio_url download; a retry starts it again.
        changes = started("Starting again after its worker stopped", progress=0.0) if retried else started()
        if self.store.update_if(task.id, ACTIVE, held, **changes) is None:
            return  # deleted just now (its upload with it), or no longer this run's
        progress = RunProgress(task)
        lost = threading.Event()
        done = threading.Event()

        def on_progress(stage: Stage, fraction: float) -> None:
            if lost.is_set():
                raise JobCancelled
            if self.store.update_if(task.id, TaskStatus.PROCESSING, held, **progress.step(stage, fraction)) is None:
                raise JobCancelled  # deleted, or no longer this run's: stop here

        heartbeat = threading.Thread(
            target=self._heartbeat, args=(task, lease, held, progress.watch, lost, done), daemon=True
        )
        heartbeat.start()  # before the fetch: a large object takes longer than a lease lasts
        try:
            self.storage.fetch_sync(task.job)  # from the bucket to a scratch file, when it waits there
            output = self._pipeline.run(task.job, on_progress)
        except (UploadMissing, StorageUnavailable) as error:
            self._end(task, held, failed(str(error), server_fault=True))
        except JobCancelled:
            logger.info("Task %s stopped: deleted, or no longer this worker's", task.id)
        except PipelineError as error:
            self._end(task, held, failed(public_message(str(error))))
        except Exception as error:  # noqa: BLE001 - the worker must outlive a bad job
            logger.error("Job %s failed:\n%s", task.id, traceback.format_exc())
            self._end(
                task,
                held,
                failed(
                    f"Transcription failed unexpectedly ({type(error).__name__}). Upload the file again; if it fails "
                    f"again, give the server's operator the task id {task.id} (the cause is in the worker's log).",
                    server_fault=True,
                ),
            )
        else:
            self._end(task, held, completed(output))
        finally:
            done.set()
            self._pipeline.release()
            gc.collect()
            self.storage.release_scratch(task.job)  # the scratch copy goes whatever became of the task

    def _heartbeat(
        self,
        task: Task,
        lease: Lock,
        held: tuple[str, str],
        watch: StageWatch,
        lost: threading.Event,
        done: threading.Event,
    ) -> None:
        limit = self._settings.stage_timeout_seconds
        while not done.wait(min(RENEW_SECONDS, limit / 4)):
            try:
                lease.reacquire()
            except LockError:
                logger.warning("Task %s: its lease lapsed and another worker may run it; stopping", task.id)
                lost.set()
                return
            except Exception:  # Redis away for a moment: the lease lasts a few renewals
                logger.warning("Task %s: could not renew its lease", task.id, exc_info=True)
            if watch.overdue(limit):
                self._end(task, held, failed(timeout_failure(watch.current, self._settings)))
                # Only killing the process stops the stage; Celery replaces it, and a redelivery finds the task failed.
                os.kill(os.getpid(), signal.SIGKILL)
