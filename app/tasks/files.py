"""The upload directory: who may read it, and which paths in it a stored task may point at.

Uploads are other people's recordings: the directory is private to the service's user (0700)
and each file in it too (0600), whatever the umask, so other accounts on a shared host read
nothing.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import BinaryIO

logger = logging.getLogger(__name__)

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600


def prepare_upload_dir(directory: Path) -> None:
    """Create the directory private to this user, or make an existing one private."""
    directory.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    if directory.stat().st_mode & 0o777 != DIRECTORY_MODE:
        try:
            directory.chmod(DIRECTORY_MODE)
        except PermissionError:
            logger.warning("UPLOAD_DIR %s is readable by other users and not ours to change; fix its mode", directory)


def create_private(path: Path) -> BinaryIO:
    """A new file, readable and writable by this user only; FileExistsError if the name is taken."""
    path.parent.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE), "wb")


def lies_under(path: Path, directory: Path) -> bool:
    """True when `path` names something strictly inside `directory`, symbolic links and `..` resolved."""
    resolved = path.resolve()
    return resolved != directory.resolve() and resolved.is_relative_to(directory.resolve())
