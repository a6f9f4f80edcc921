"""The live worker: one process holding the live models (engine.py), serving every live session.

Kept apart from the task workers, so a long queued file never delays live speech and live speech
never takes a task's worker; sessions' calls are served in the order they come. It starts with the
first session and stays loaded; if it dies, the sessions using it end with an `error` event and the
next session starts a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import threading
import traceback
from multiprocessing.connection import Connection
from typing import Any

from app.config import Settings
from app.live.engine import LiveEngineFactory
from app.ops.model_process import prepare_model_process
from app.ops.telemetry import disable_onnxruntime_telemetry

logger = logging.getLogger(__name__)

_mp = multiprocessing.get_context("spawn")


class LiveWorkerFailed(Exception):
    """The live worker could not load its models, failed a call, or stopped; the message is for the client."""


def _child_main(conn: Connection, factory: LiveEngineFactory, settings: Settings) -> None:
    prepare_model_process(settings.log_level, "live")
    disable_onnxruntime_telemetry()
    try:
        engine = factory(settings)
    except Exception as error:
        logger.exception("Could not load the live models")
        conn.send(("load_failed", f"{type(error).__name__}: the live model {settings.live_model} could not be loaded"))
        return
    conn.send(("ready",))
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        call_id, method, args = request
        try:
            conn.send(("ok", call_id, getattr(engine, method)(*args)))
        except Exception as error:  # noqa: BLE001 - one bad call must not end every session
            logger.error("Live call %s failed:\n%s", method, traceback.format_exc())
            conn.send(("error", call_id, f"{method} failed ({type(error).__name__})"))


class LiveWorker:
    """Parent-side handle: `call` runs an engine method in the worker and awaits its answer."""

    def __init__(self, factory: LiveEngineFactory, settings: Settings) -> None:
        self._factory = factory
        self._settings = settings
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._send_lock = threading.Lock()
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count()
        self._starting: asyncio.Task[None] | None = None

    async def ready(self) -> None:
        """Start the worker unless it runs, and wait until its models are loaded; LiveWorkerFailed if they cannot be."""
        if self._process is not None and self._process.is_alive() and self._starting is None:
            return
        if self._starting is None:
            self._starting = asyncio.create_task(self._start())
        starting = self._starting
        try:
            await asyncio.shield(starting)
        finally:
            if starting.done():
                self._starting = None

    async def _start(self) -> None:
        await self.stop()
        parent, child = _mp.Pipe()
        self._process = _mp.Process(
            target=_child_main, args=(child, self._factory, self._settings), name="live-worker", daemon=True
        )
        self._process.start()
        child.close()
        self._conn = parent
        loop = asyncio.get_running_loop()
        loaded: asyncio.Future[tuple[Any, ...]] = loop.create_future()
        threading.Thread(target=self._read, args=(parent, loop, loaded), name="live-reader", daemon=True).start()
        message = await loaded
        if message[0] != "ready":
            await self.stop()
            reason = message[1] if message[0] == "load_failed" else "the live worker exited while loading"
            raise LiveWorkerFailed(f"Live transcription is unavailable: {reason}.")
        logger.info("Live worker ready: model %s", self._settings.live_model)

    def _read(self, conn: Connection, loop: asyncio.AbstractEventLoop, loaded: asyncio.Future[Any]) -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                message = ("exited",)
            try:
                loop.call_soon_threadsafe(self._deliver, conn, message, loaded)
            except RuntimeError:  # the event loop has closed
                return
            if message[0] == "exited":
                return

    def _deliver(self, conn: Connection, message: tuple[Any, ...], loaded: asyncio.Future[Any]) -> None:
        if message[0] in ("ready", "load_failed") or (message[0] == "exited" and not loaded.done()):
            if not loaded.done():
                loaded.set_result(message)
            return
        if message[0] == "exited":
            if conn is not self._conn:  # a worker stopped before the one now running
                return
            for waiting in self._pending.values():
                if not waiting.done():
                    waiting.set_exception(LiveWorkerFailed("The live worker stopped unexpectedly; reconnect."))
            self._pending.clear()
            return
        answered = self._pending.get(message[1])
        if answered is None or answered.done():
            return
        if message[0] == "ok":
            answered.set_result(message[2])
        else:
            answered.set_exception(LiveWorkerFailed(f"Live transcription failed: {message[2]}."))

    async def call(self, method: str, *args: Any) -> Any:
        if self._conn is None or self._process is None or not self._process.is_alive():
            raise LiveWorkerFailed("The live worker is not running; reconnect.")
        call_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        try:
            # Audio of a few seconds: a pipe write of a few hundred kB, off the event loop.
            await asyncio.to_thread(self._send, (call_id, method, args))
        except OSError:
            self._pending.pop(call_id, None)
            raise LiveWorkerFailed("The live worker stopped unexpectedly; reconnect.") from None
        try:
            return await future
        finally:
            self._pending.pop(call_id, None)

    def _send(self, request: tuple[Any, ...]) -> None:
        assert self._conn is not None  # noqa: S101 - checked by call
        with self._send_lock:
            self._conn.send(request)

    async def stop(self) -> None:
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if process is None:
            return
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.send(None)
        await asyncio.to_thread(process.join, 5)
        if process.is_alive():
            process.kill()
            await asyncio.to_thread(process.join, 5)
        if conn is not None:
            conn.close()
