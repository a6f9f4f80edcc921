"""Folders and files only the service's user may read: uploads, transcripts and voices are other people's data.

They are created private whatever the umask, and an existing one with a looser mode is tightened at
start when this user owns it (only the owner may change a mode; otherwise a warning says what to fix).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600


def private_directory(directory: Path, setting: str) -> None:
    """Create the directory private to this user, or make an existing one private; `setting` names it in warnings."""
    directory.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    _tighten(directory, DIRECTORY_MODE, setting)


def private_file(path: Path, setting: str) -> None:
    """Create the file empty and private to this user (its folder too, if new), or make an existing one private.

    For a database, before SQLite opens it: SQLite gives its journal files the database file's mode.
    """
    path.parent.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE))
    _tighten(path, FILE_MODE, setting)


def _tighten(path: Path, mode: int, setting: str) -> None:
    status = path.stat()
    if status.st_mode & 0o777 == mode:
        return
    if status.st_uid != os.getuid():  # only the owner may change a mode
        logger.warning("%s %s is readable by other users and not ours to change; fix its mode", setting, path)
        return
    path.chmod(mode)
