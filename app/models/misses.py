"""Models that could not be fetched, remembered for a while so that tasks do not ask the hub again.

A worker that finds an aligner neither cached nor downloadable would otherwise ask the hub for it
on every task that needs it: a few seconds each time, and a warning in the log each time. The first
failure is written beside the cache (`MODEL_CACHE_DIR/unavailable/`) and every worker sharing that
cache takes it as the answer for RETRY_SECONDS, so the hub is asked, and the log told, once per
model in that time. A cache that cannot be written still remembers the failure in the process.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from app.models.hub import ModelUnavailable

logger = logging.getLogger(__name__)

RETRY_SECONDS = 600.0
"""How long a failed fetch stands before the hub is asked again: long enough that a burst of tasks
costs one try, short enough that a model pulled into the cache (or a network back) is found soon."""

Fetched = TypeVar("Fetched")


class Misses:
    """The fetches that failed lately, shared by the workers that share one model cache."""

    def __init__(self, folder: Path, clock: Callable[[], float] = time.time) -> None:
        self._folder = folder
        self._clock = clock
        self._known: dict[str, tuple[float, str]] = {}  # name -> (when, message), this process's own view

    def fetch(self, name: str, fetch: Callable[[], Fetched]) -> Fetched:
        """`fetch()`, unless fetching `name` failed within RETRY_SECONDS: then that failure again, untried."""
        with self._locked(name):
            if (message := self._recent(name)) is not None:
                raise ModelUnavailable(message)
            try:
                return fetch()
            except ModelUnavailable as error:
                self._remember(name, str(error))
                raise

    def _path(self, name: str) -> Path:
        return self._folder / re.sub(r"[^\w.-]", "_", name)

    def _recent(self, name: str) -> str | None:
        when, message = self._known.get(name, (0.0, ""))
        with contextlib.suppress(OSError, ValueError):  # absent or unreadable: this process's view stands
            written, message_written = self._path(name).read_text().split("\n", 1)
            if float(written) > when:
                when, message = float(written), message_written
        return message if self._clock() - when < RETRY_SECONDS else None

    def _remember(self, name: str, message: str) -> None:
        now = self._clock()
        self._known[name] = (now, message)
        with contextlib.suppress(OSError):  # a read-only cache: this process still remembers
            self._path(name).write_text(f"{now}\n{message}")

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        """Held while one worker tries a model: the others wait for its answer instead of asking too."""
        try:
            self._folder.mkdir(parents=True, exist_ok=True)
            path = self._path(name)
            lock = path.with_name(f"{path.name}.lock").open("a")
        except OSError:
            yield
            return
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield
