"""The upload directory: who may read it, and which paths in it a stored task may point at."""

from __future__ import annotations

from pathlib import Path


def lies_under(path: Path, directory: Path) -> bool:
    """True when `path` names something strictly inside `directory`, symbolic links and `..` resolved."""
    resolved = path.resolve()
    return resolved != directory.resolve() and resolved.is_relative_to(directory.resolve())
