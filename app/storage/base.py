"""The storage interface both kinds of storage offer: what the API, the lifecycle and the workers call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from app.pipeline.base import Job


class StorageUnavailable(Exception):
    """The storage could not be reached or refused this server's credentials; the message names it
    (never a credential) and is meant for the user or the operator."""


class UploadMissing(Exception):
    """A worker cannot find a task's upload; the message says where it looked."""


class ObjectWriter(Protocol):
    """An upload on its way into the storage, written as it arrives."""

    async def write(self, data: bytes) -> None: ...

    async def complete(self) -> None:
        """Everything has been written: the object exists from now on."""

    async def discard(self) -> None:
        """Leave nothing behind: abort an unfinished upload, or remove the finished object."""


class Storage(Protocol):
    description: str
    """What the storage is, for messages and logs (a directory, or a bucket and its endpoint; never a credential)."""

    def writer(self, key: str) -> ObjectWriter | None:
        """Where a new upload's bytes go besides UPLOAD_DIR, under `key`; None when UPLOAD_DIR is the storage."""

    def upload_key(self, owner: str, task_id: str) -> str:
        """The key of a task's upload: one folder per key id."""

    def sample_key(self, owner: str, sample_id: str) -> str:
        """The key of an enrolment sample while it is embedded: one folder per key id."""

    async def open(self) -> None:
        """Connect (in the API process, on its event loop)."""

    async def close(self) -> None: ...

    async def check(self) -> None:
        """Raise StorageUnavailable unless the storage answers."""

    async def discard(self, job: Job) -> None:
        """Remove the job's upload wherever it is (the API process)."""

    def discard_sync(self, job: Job) -> None:
        """Remove the job's upload wherever it is (a worker)."""

    def fetch_sync(self, job: Job) -> None:
        """Make `job.audio_path` hold the job's audio on this machine (a worker); UploadMissing or
        StorageUnavailable when it cannot."""

    def release_scratch(self, job: Job) -> None:
        """Remove this machine's scratch copy of the audio, if it is a copy (the object stays)."""

    async def sweep(self, has_task: Callable[[str], bool], grace_seconds: float) -> int:
        """Remove what no live task refers to and is older than `grace_seconds`; how many were removed."""
