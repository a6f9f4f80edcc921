"""Whisper models a worker holds: loaded on demand, at most a few at once, unloaded when idle.

The shape follows speaches' model manager: a request names a model, the manager loads it if it
is not loaded, the least recently used goes first when the limit is reached, and a model unused
for the idle time is unloaded (the default model excepted: it stays ready for the next request).
The host calls `unload_idle` from time to time (the worker's wait for jobs, the Celery announcer).

A model's files are fetched before anything is unloaded to make room for it, so a request for one
that cannot be had (uncached and offline, a download failing) leaves the loaded models as they were.
The default is not pinned, but it goes last: with room for one model a chosen one takes its place
(the limit is the operator's memory budget), with room for two it stays beside any chosen one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

Model = TypeVar("Model")
Loaded = TypeVar("Loaded")


class ModelManager(Generic[Model]):
    def __init__(
        self, load: Callable[[str], Model], max_loaded: int, idle_seconds: float, keep: str | None = None,
        clock: Callable[[], float] = time.monotonic, fetch: Callable[[str], object] | None = None,
    ) -> None:  # fmt: skip
        """`fetch(name)` gets a model's files (downloading them if need be) and raises when it cannot;
        `load(name)` builds the model from them."""
        self._load = load
        self._fetch = fetch
        self._max_loaded = max_loaded
        self._idle_seconds = idle_seconds
        self._keep = keep
        self._clock = clock
        self._models: OrderedDict[str, Model] = OrderedDict()  # least recently used first
        self._last_used: dict[str, float] = {}
        self._in_use: dict[str, int] = {}
        self._lock = threading.RLock()
        self.failures: dict[str, Exception] = {}
        """The last load failure of each model that has not loaded since."""

    @contextlib.contextmanager
    def use(self, name: str) -> Iterator[Model]:
        """The named model, loaded if need be; it is not unloaded while in use."""
        with self._lock:
            loaded = name in self._models
        if not loaded and self._fetch is not None:
            # Outside the lock: a download holds up no user of the models already loaded.
            self._failing(name, self._fetch)
        with self._lock:
            if name not in self._models:
                self._make_room()
                logger.info("Loading Whisper model %s", name)
                self._models[name] = self._failing(name, self._load)
                self.failures.pop(name, None)
            self._models.move_to_end(name)
            self._in_use[name] = self._in_use.get(name, 0) + 1
            model = self._models[name]
        try:
            yield model
        finally:
            with self._lock:
                self._in_use[name] -= 1
                self._last_used[name] = self._clock()

    def _failing(self, name: str, step: Callable[[str], Loaded]) -> Loaded:
        """`step(name)`, its failure remembered for the worker's report."""
        try:
            return step(name)
        except Exception as error:
            with self._lock:
                self.failures[name] = error
            raise

    def _make_room(self) -> None:
        # Least recently used first, the default last (sorted is stable).
        for name in sorted(self._models, key=lambda loaded: loaded == self._keep):
            if len(self._models) < self._max_loaded:
                return
            if not self._in_use.get(name):
                self._unload(name, "to make room")

    def unload_idle(self) -> list[str]:
        """Unload the models unused for the idle time; their names."""
        with self._lock:
            now = self._clock()
            idle = [
                name for name in self._models
                if name != self._keep and not self._in_use.get(name)
                and now - self._last_used.get(name, now) >= self._idle_seconds
            ]  # fmt: skip
            for name in idle:
                self._unload(name, "idle")
            return idle

    def _unload(self, name: str, why: str) -> None:
        logger.info("Unloading Whisper model %s (%s)", name, why)
        del self._models[name]
        self._last_used.pop(name, None)
        self._in_use.pop(name, None)

    def loaded(self) -> list[str]:
        """Loaded models, most recently used last."""
        with self._lock:
            return list(self._models)
