"""UPLOAD_DIR as the storage: one machine, or a filesystem every machine mounts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from app.pipeline.base import Job
from app.storage.base import ObjectWriter, UploadMissing

NOT_SHARED = (
    "The worker cannot read this task's upload: UPLOAD_DIR must be a directory the API and every worker share "
    "(or set STORAGE_URL to a bucket they all reach); tell the server's operator."
)


class LocalStorage:
    def __init__(self, upload_dir: Path) -> None:
        self.upload_dir = upload_dir
        self.description = f"UPLOAD_DIR {upload_dir}"

    def writer(self, key: str) -> ObjectWriter | None:
        return None  # the file in UPLOAD_DIR is the upload

    def upload_key(self, owner: str, task_id: str) -> str:
        return task_id

    def sample_key(self, owner: str, sample_id: str) -> str:
        return sample_id

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def check(self) -> None:
        pass  # a local directory is there whenever the process is

    async def discard(self, job: Job) -> None:
        job.audio_path.unlink(missing_ok=True)

    def discard_sync(self, job: Job) -> None:
        job.audio_path.unlink(missing_ok=True)

    def fetch_sync(self, job: Job) -> None:
        if not job.audio_path.exists():
            raise UploadMissing(NOT_SHARED)

    def release_scratch(self, job: Job) -> None:
        pass  # the file is the upload itself, not a copy

    async def sweep(self, has_task: Callable[[str], bool], grace_seconds: float) -> int:
        return 0  # UPLOAD_DIR is swept once, as the service starts (app/tasks/files.py)
