"""Where an upload waits for its worker: UPLOAD_DIR on this machine (the default), or an
S3-compatible bucket (STORAGE_URL), so that API processes and workers share no filesystem.

Every upload (a file, an `audio_url` download, an enrolment sample) is written by the API
process into UPLOAD_DIR as it arrives, where ffprobe checks it. With a bucket, the same bytes go
on into the bucket at the same time (app/storage/s3.py), the local file is a scratch copy removed
when the request ends, and the job records the object's key; the worker copies the object to a
scratch file of its own, and the object goes when the task ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.storage.base import ObjectWriter, Storage, StorageUnavailable, UploadMissing

if TYPE_CHECKING:
    from app.config import Settings

__all__ = ["ObjectWriter", "Storage", "StorageUnavailable", "UploadMissing", "make_storage"]


def make_storage(settings: Settings) -> Storage:
    if settings.storage_url is None:
        from app.storage.local import LocalStorage

        return LocalStorage(settings.upload_dir)
    from app.storage.s3 import S3Storage

    return S3Storage(settings.storage_url, settings.s3_endpoint_url, settings.upload_dir)
