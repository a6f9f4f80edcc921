"""One download of a model at a time, however many tasks, threads or worker processes want it.

A lock file per model beside the cache (`MODEL_CACHE_DIR/<kind>/.download-locks/`): the first to
want a missing model downloads it while holding the lock; the others wait on it, then find the model
cached and make no request of their own. Workers on other hosts that share the cache over a network
file system are held too where it honours `flock`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import re
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

LOCKS = ".download-locks"
"""The folder of lock files in each kind's cache folder (huggingface_hub's own `.locks` is per file)."""


@contextlib.contextmanager
def download_lock(cache_dir: Path, name: str) -> Iterator[None]:
    """Held while `name` is looked up in `cache_dir` and, when missing, downloaded into it."""
    try:
        (cache_dir / LOCKS).mkdir(parents=True, exist_ok=True)
        file = (cache_dir / LOCKS / (re.sub(r"[^\w.-]", "_", name) + ".lock")).open("a")
    except OSError:  # a read-only cache: nothing can be downloaded into it (the download says why)
        yield
        return
    # flock: held per open file, so threads of one process exclude each other too; a process that
    # dies lets go of it with its files.
    with file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Logged, so a task that waits here is explained: its model is on its way.
            logger.info("Waiting for %s: another task is downloading it", name)
            fcntl.flock(file, fcntl.LOCK_EX)
        yield
