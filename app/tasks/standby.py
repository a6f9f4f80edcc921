"""Loaded, idle worker processes that take over at once from a worker killed in the middle of a task.

A worker is killed when a deleted task does not stop within CANCEL_GRACE_SECONDS (a transcription
batch or a diarization step cannot be interrupted, and can run for seconds on a CPU), when a stage
runs past STAGE_TIMEOUT_SECONDS, or it dies on its own. A fresh worker then spends ~10 s on a CPU
importing torch and loading the models while the next task waits. A standby worker has done all
of that beforehand: it takes the dead worker's slot, and a new standby loads in the background.

Why a whole loaded process, at a worker's memory: a `forkserver` with torch and whisperx imported
would start a worker in milliseconds, but the models would still load in the new process (seconds
on a CPU); the models cannot be loaded in the forkserver itself (CUDA and the inference thread
pools do not survive a fork); and a forkserver's children would take its environment, not the one
the service has when they start.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from app.config import Settings
from app.pipeline.base import PipelineFactory
from app.tasks.worker_process import WorkerProcess

logger = logging.getLogger(__name__)


class StandbyWorkers:
    """STANDBY_WORKERS loaded workers, handed out oldest first and replaced as they go."""

    def __init__(self, factory: PipelineFactory, settings: Settings) -> None:
        self._factory = factory
        self._settings = settings
        self._wanted = 0
        """How many to keep: known once the workers have said which device they run on."""
        self._loading: deque[asyncio.Task[WorkerProcess]] = deque()
        """Each standby's start, in the order they were started: done once it is loaded."""
        self._workers: list[WorkerProcess] = []
        """Every standby not handed out, loaded or not: what `stop` ends."""
        self._started = 0

    def start(self, device: str) -> None:
        """Start the standbys, STANDBY_WORKERS of them or, unset, one for workers on the CPU and none on CUDA."""
        configured = self._settings.standby_workers
        self._wanted = configured if configured is not None else int(device == "cpu")
        self.fill()

    def fill(self) -> None:
        """Start loading standby workers until enough are loaded or on their way."""
        while len(self._loading) < self._wanted:
            self._started += 1
            worker = WorkerProcess(f"standby-{self._started}", self._factory, self._settings)
            self._workers.append(worker)
            self._loading.append(asyncio.create_task(self._load(worker), name=worker.name))

    @staticmethod
    async def _load(worker: WorkerProcess) -> WorkerProcess:
        await worker.start()
        return worker

    async def take(self, name: str) -> WorkerProcess | None:
        """The oldest standby, renamed `name`, once loaded (usually long since); None when there is
        none or it could not load its models. Another one starts loading at once."""
        if not self._loading:
            return None
        loading = self._loading.popleft()
        self.fill()
        try:
            worker = await loading
        except Exception:  # could not even start: restarting the dead worker will try again
            logger.exception("A standby worker could not start")
            return None
        self._workers.remove(worker)
        if worker.load_error is not None or not worker.alive():  # failed to load, or died while idle
            await worker.stop()
            return None
        logger.info("%s takes over as %s", worker.name, name)
        worker.name = name
        return worker

    async def stop(self) -> None:
        for loading in self._loading:
            loading.cancel()
        await asyncio.gather(*self._loading, return_exceptions=True)
        await asyncio.gather(*(worker.stop() for worker in self._workers))
        self._loading.clear()
        self._workers.clear()
