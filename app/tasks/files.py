"""The upload directory: who may read it, and which paths in it a stored task may point at.

Uploads are other people's recordings: the directory is private to the service's user (0700)
and each file in it too (0600), whatever the umask, so other accounts on a shared host read
nothing.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from app.private_files import DIRECTORY_MODE, FILE_MODE, private_directory

logger = logging.getLogger(__name__)


def prepare_upload_dir(directory: Path) -> None:
    """Create the directory private to this user, or make an existing one private."""
    private_directory(directory, "UPLOAD_DIR")


def create_private(path: Path) -> BinaryIO:
    """A new file, readable and writable by this user only; FileExistsError if the name is taken."""
    path.parent.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE), "wb")


def new_upload_path(upload_dir: Path) -> Path:
    """Where a new task's audio goes; its name is the task id (a client's file name never touches the disk)."""
    return upload_dir / str(uuid.uuid4())


def lies_under(path: Path, directory: Path) -> bool:
    """True when `path` names something strictly inside `directory`, symbolic links and `..` resolved."""
    resolved = path.resolve()
    return resolved != directory.resolve() and resolved.is_relative_to(directory.resolve())


def _is_upload_name(name: str) -> bool:
    """Uploads are named by their task id, a UUID; anything else in the directory is not ours to sweep."""
    try:
        return str(uuid.UUID(name)) == name
    except ValueError:
        return False


def sweep_orphans(directory: Path, has_task: Callable[[str], bool], grace_seconds: float) -> int:
    """Delete uploads no task refers to that have not been written for `grace_seconds`; how many.

    What a crash leaves behind (an in-memory store forgets its tasks, not their files). The
    grace period makes it safe while other processes share the directory: a file being written,
    or stored but not yet recorded as a task, is younger than that.
    """
    swept = 0
    cutoff = time.time() - grace_seconds
    for path in directory.iterdir() if directory.is_dir() else ():
        try:
            if not _is_upload_name(path.name) or not path.is_file() or path.stat().st_mtime > cutoff:
                continue
            if not has_task(path.name):
                path.unlink()
                swept += 1
        except FileNotFoundError:
            continue  # removed meanwhile by its task
    if swept:
        logger.info("Removed %d uploads in %s that no task refers to", swept, directory)
    return swept
