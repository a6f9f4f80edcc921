"""A worker process that owns a loaded pipeline and runs one job at a time.

Inference runs in a child process, not a thread: the event loop keeps answering while the
models hold the GIL, a cancelled job can be killed for real if it does not stop in time,
and a crash or out-of-memory kill takes down one task, not the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import re
import signal
import threading
import traceback
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from typing import Any, cast

from app.config import Settings
from app.ops.model_process import prepare_model_process
from app.pipeline.base import (
    Job,
    PipelineError,
    PipelineFactory,
    PipelineInfo,
    PipelineOutput,
    Stage,
)

logger = logging.getLogger(__name__)

# Spawn, never fork: the parent may have threads, and CUDA cannot survive a fork.
_mp = multiprocessing.get_context("spawn")
WORKER_NICENESS = 10
IDLE_CHECK_SECONDS = 1.0
"""How often a waiting worker looks for models to unload."""


class JobCancelled(Exception):
    """The job stopped because its task was deleted."""


class JobFailed(Exception):
    """The job failed; the message is meant for the user."""

    def __init__(self, message: str, server_fault: bool = False) -> None:
        super().__init__(message)
        self.server_fault = server_fault
        """An unexpected error in the worker, rather than input it could not use."""


class WorkerDied(Exception):
    """The worker process ended in the middle of a job (killed, or out of memory)."""


# An absolute path of two or more parts, as exception messages quote them.
_PATH = re.compile(r"(?<![\w.:/])(?:/[\w.@+-]+){2,}/?")


def public_message(message: str) -> str:
    """A message fit for a response: server paths are replaced (the log keeps the full error)."""
    return _PATH.sub("<server path>", message)


def _exit_on_terminate(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _child_main(conn: Connection, cancel: Event, factory: PipelineFactory, settings: Settings) -> None:
    prepare_model_process(settings.log_level, "worker")
    # SIGTERM ends a worker as an exit, not a kill, so multiprocessing's exit handlers run: a killed
    # process leaves the semaphores it made (torch) registered, and the resource tracker warns of
    # them as leaked at shutdown.
    signal.signal(signal.SIGTERM, _exit_on_terminate)
    # Inference yields the CPU to the API process, so status requests stay fast under load.
    os.nice(WORKER_NICENESS)
    try:
        pipeline = factory(settings)
    except Exception as error:
        logger.exception("Could not load the pipeline")
        conn.send(("load_failed", public_message(str(error) or type(error).__name__)))
        return
    # Ready once everything the first job needs is loaded (the diarizer, the VAD, the English aligner):
    # a worker that said so earlier would make the first task wait for it.
    try:
        pipeline.finish_loading()
    except Exception:  # a job will try again and fail with a message of its own
        logger.exception("Could not finish loading the pipeline")
    conn.send(("ready", pipeline.info()))

    def report(stage: Stage, fraction: float, text: str | None = None, /) -> None:
        # Checked at every progress step: raising here unwinds the pipeline cooperatively.
        if cancel.is_set():
            raise JobCancelled
        conn.send(("progress", stage, float(fraction), text))

    while True:
        try:
            # While waiting, unload the models left idle (MODEL_IDLE_SECONDS); /health hears of it.
            while not conn.poll(IDLE_CHECK_SECONDS):
                if pipeline.unload_idle():
                    conn.send(("info", pipeline.info()))
            job = conn.recv()
        except EOFError:  # the parent went away
            return
        if job is None:
            return
        try:
            conn.send(("done", pipeline.run(job, report)))
        except JobCancelled:
            conn.send(("cancelled",))
        except PipelineError as error:
            conn.send(("failed", public_message(str(error))))
        except Exception as error:  # noqa: BLE001 - the service must outlive a bad job
            logger.error("Job %s failed:\n%s", job.task_id, traceback.format_exc())
            conn.send(
                (
                    "crashed",
                    f"Transcription failed unexpectedly ({type(error).__name__}). Upload the file again; if it "
                    f"fails again, give the server's operator the task id {job.task_id} (the cause is in its log).",
                )
            )
        finally:
            # Collect first: the heap pages release() hands back are only free once the objects are gone.
            gc.collect()
            pipeline.release()
            conn.send(("info", pipeline.info()))  # the models it has loaded now


class WorkerProcess:
    """Parent-side handle of one worker process."""

    def __init__(self, name: str, factory: PipelineFactory, settings: Settings) -> None:
        self.name = name
        self._factory = factory
        self._settings = settings
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._cancel = _mp.Event()
        self._inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self.info: PipelineInfo | None = None
        self.load_error: str | None = None
        self._loading = False

    async def start(self) -> None:
        """Spawn the process and wait until its models are loaded (or failed to load)."""
        parent_conn, child_conn = _mp.Pipe()
        self._inbox = asyncio.Queue()
        self._process = _mp.Process(
            target=_child_main,
            args=(child_conn, self._cancel, self._factory, self._settings),
            name=self.name,
            daemon=True,
        )
        self._loading = True
        self._process.start()
        child_conn.close()
        self._conn = parent_conn
        loop = asyncio.get_running_loop()
        threading.Thread(target=self._read, args=(parent_conn, loop), name=f"{self.name}-reader", daemon=True).start()
        message = await self._inbox.get()
        self._loading = False
        if message[0] == "ready":
            self.info, self.load_error = message[1], None
            logger.info("%s ready: model %s on %s", self.name, self.info.model, self.info.device)
        else:
            self.load_error = message[1] if message[0] == "load_failed" else "the worker process exited while loading"
            logger.error("%s could not load the models: %s", self.name, self.load_error)

    def _read(self, conn: Connection, loop: asyncio.AbstractEventLoop) -> None:
        """Forward the child's messages to the event loop; a dedicated thread, so no executor is starved."""
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                message = ("exited",)
            try:
                if message[0] == "info":  # what the worker loaded after it was ready
                    loop.call_soon_threadsafe(setattr, self, "info", message[1])
                else:
                    loop.call_soon_threadsafe(self._inbox.put_nowait, message)
            except RuntimeError:  # the event loop has closed
                return
            if message[0] == "exited":
                return

    async def run(self, job: Job, on_progress: Callable[[Stage, float, str | None], Awaitable[None]]) -> PipelineOutput:
        """Run a job; `on_progress` hears each step, with the text transcribed in it, if any."""
        if self._conn is None:
            raise RuntimeError(f"{self.name} is not started")
        # The stop request is not cleared here: a delete that came while the task was being started
        # must still stop it (`take_next` cleared what the previous task left).
        try:
            self._conn.send(job)
        except OSError:  # the process died while it waited for work
            raise WorkerDied from None
        while True:
            message = await self._inbox.get()
            match message:
                case ("progress", stage, fraction, text):
                    await on_progress(stage, fraction, text)
                case ("done", output):
                    return cast(PipelineOutput, output)
                case ("failed", error):
                    raise JobFailed(error)
                case ("crashed", error):
                    raise JobFailed(error, server_fault=True)
                case ("cancelled",):
                    raise JobCancelled
                case _:
                    raise WorkerDied

    def take_next(self) -> None:
        """Forget a stop request left for the previous task: called before the next one is named this worker's."""
        self._cancel.clear()

    def cancel(self) -> None:
        """Ask the running job to stop at its next progress step."""
        self._cancel.set()

    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def kill(self) -> None:
        if self._process is not None and self._process.is_alive():
            logger.warning("Killing %s (pid %s)", self.name, self._process.pid)
            self._process.kill()

    async def stop(self) -> None:
        if self._process is None:
            return
        self.cancel()  # a job in progress stops at its next step rather than holding up shutdown
        if self._conn is not None and not self._loading:  # one still loading reads no request
            with contextlib.suppress(OSError):
                self._conn.send(None)
            await asyncio.to_thread(self._process.join, 5)
        if self._process.is_alive():  # still loading, or in a long step: ask it to exit
            self._process.terminate()
            await asyncio.to_thread(self._process.join, 5)
        self.kill()
        if self._conn is not None:
            self._conn.close()
        self._process = None
