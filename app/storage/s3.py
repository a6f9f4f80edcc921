"""An S3-compatible bucket as the storage: STORAGE_URL=s3://bucket/prefix, S3_ENDPOINT_URL for
services other than AWS (MinIO, Ceph, Cloudflare R2, Google Cloud Storage's S3 interface).

Clients: aiobotocore in the API process, so no storage call blocks its event loop, and botocore
(the synchronous library aiobotocore is built on, with the same calls and errors) in the workers,
which are synchronous processes. Both find credentials the way every AWS tool does (environment,
shared config and credentials files, web identity, container and instance roles); the service
never reads, logs or shows one.

An upload goes into the bucket as it arrives, as a multipart upload of PART_BYTES parts with at
most PARTS_IN_FLIGHT of them being sent at once: a slower bucket slows the reading of the request
body (its bytes wait in the socket, not in memory), so an upload of any size holds about
(PARTS_IN_FLIGHT + 1) × PART_BYTES. A file smaller than one part is sent with one PUT.

Layout under the prefix: `uploads/<key id>/<task id>` and `samples/<key id>/<sample id>`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import botocore.session
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from app.pipeline.base import Job
from app.private_files import DIRECTORY_MODE, FILE_MODE
from app.storage.base import StorageUnavailable, UploadMissing

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
PART_BYTES = 8 * MIB
"""S3 takes parts of 5 MiB to 5 GiB (the last one may be smaller) and at most 10,000 of them."""
PARTS_IN_FLIGHT = 2
FOLDERS = ("uploads/", "samples/")
_READ_BYTES = MIB
_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
T = TypeVar("T")


def _client_config(endpoint_url: str | None) -> dict[str, Any]:
    return {
        "connect_timeout": 5,
        "read_timeout": 60,
        # Few quick tries: an upload waiting on a bucket that is away holds its client's request open.
        "retries": {"max_attempts": 3, "mode": "standard"},
        # Checksums only where S3 requires them: S3-compatible services that predate the newer
        # checksum headers refuse them.
        "request_checksum_calculation": "when_required",
        "response_checksum_validation": "when_required",
        # Services other than AWS serve buckets by path (no per-bucket DNS name).
        "s3": {"addressing_style": "path" if endpoint_url else "auto"},
    }


def _reason(error: Exception) -> str:
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", "error"))
    return type(error).__name__


class S3Storage:
    def __init__(self, url: str, endpoint_url: str | None, upload_dir: Path) -> None:
        parsed = urlsplit(url)
        self.bucket = parsed.netloc
        prefix = parsed.path.strip("/")
        self.prefix = f"{prefix}/" if prefix else ""
        self.endpoint_url = endpoint_url
        self.upload_dir = upload_dir
        self.description = f"s3://{self.bucket}/{self.prefix}" + (f" at {endpoint_url}" if endpoint_url else "")
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._sync_client: Any = None

    # Keys: what a job records is relative to the prefix.

    def upload_key(self, owner: str, task_id: str) -> str:
        return f"uploads/{owner}/{task_id}"

    def sample_key(self, owner: str, sample_id: str) -> str:
        return f"samples/{owner}/{sample_id}"

    def full_key(self, key: str) -> str:
        return self.prefix + key

    def unavailable(self, error: Exception) -> StorageUnavailable:
        return StorageUnavailable(
            f"The upload storage ({self.description}) cannot be used: it is unreachable or refused this "
            f"server's credentials ({_reason(error)}); try again later, and tell the server's operator if it persists."
        )

    # The API process: aiobotocore on the event loop.

    async def open(self) -> None:
        config = AioConfig(**_client_config(self.endpoint_url), max_pool_connections=64)
        factory = get_session().create_client("s3", endpoint_url=self.endpoint_url, config=config)
        self._client = await self._stack.enter_async_context(factory)

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None

    @property
    def client(self) -> Any:
        if self._client is None:
            raise RuntimeError("S3Storage.open() was not awaited")
        return self._client

    async def call(self, request: Awaitable[T]) -> T:
        """A storage call, its failures as StorageUnavailable."""
        try:
            return await request
        except (BotoCoreError, ClientError) as error:
            raise self.unavailable(error) from None

    def writer(self, key: str) -> MultipartWriter:
        return MultipartWriter(self, self.full_key(key))

    async def check(self) -> None:
        async with asyncio.timeout(3):  # /ready answers probes that wait a few seconds at most
            await self.call(self.client.head_bucket(Bucket=self.bucket))

    async def discard(self, job: Job) -> None:
        job.audio_path.unlink(missing_ok=True)
        if job.audio_object is None:
            return
        try:
            await self.client.delete_object(Bucket=self.bucket, Key=self.full_key(job.audio_object))
        except (BotoCoreError, ClientError) as error:  # the bucket away: the sweep removes it later
            logger.warning("Could not remove the upload of task %s from %s: %s", job.task_id, self.description, error)

    async def sweep(self, has_task: Callable[[str], bool], grace_seconds: float) -> int:
        """Abort multipart uploads left unfinished (by an API process that was killed) and remove
        objects no live task refers to, both once older than `grace_seconds`."""
        try:
            return await self._sweep(has_task, datetime.now(UTC) - timedelta(seconds=grace_seconds))
        except (BotoCoreError, ClientError) as error:
            raise self.unavailable(error) from None

    async def _sweep(self, has_task: Callable[[str], bool], cutoff: datetime) -> int:
        removed = 0
        for folder in FOLDERS:  # this service's folders only: the bucket may hold other things
            async for page in self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self.prefix + folder
            ):
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] < cutoff:
                        await self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                        removed += 1
        for folder in FOLDERS:
            async for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + folder
            ):
                for item in page.get("Contents", []):
                    name = item["Key"].rpartition("/")[2]
                    if item["LastModified"] < cutoff and not await asyncio.to_thread(has_task, name):
                        await self.client.delete_object(Bucket=self.bucket, Key=item["Key"])
                        removed += 1
        if removed:
            logger.info("Removed %d unfinished or orphaned uploads from %s", removed, self.description)
        return removed

    # A worker: botocore, synchronous.

    def _sync(self) -> Any:
        if self._sync_client is None:
            config = Config(**_client_config(self.endpoint_url))
            session = botocore.session.get_session()
            self._sync_client = session.create_client("s3", endpoint_url=self.endpoint_url, config=config)
        return self._sync_client

    def fetch_sync(self, job: Job) -> None:
        if job.audio_object is None:
            raise UploadMissing(f"This task's upload was not stored in {self.description}; upload the file again.")
        path = job.audio_path
        path.parent.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
        path.unlink(missing_ok=True)  # left by an earlier try of this task on this machine
        try:
            response = self._sync().get_object(Bucket=self.bucket, Key=self.full_key(job.audio_object))
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE), "wb") as out:
                for chunk in response["Body"].iter_chunks(_READ_BYTES):
                    out.write(chunk)
        except ClientError as error:
            path.unlink(missing_ok=True)
            if _reason(error) in _MISSING:
                raise UploadMissing(
                    f"This task's upload is no longer in {self.description}; upload the file again."
                ) from None
            raise self.unavailable(error) from None
        except BotoCoreError as error:
            path.unlink(missing_ok=True)
            raise self.unavailable(error) from None
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    def discard_sync(self, job: Job) -> None:
        job.audio_path.unlink(missing_ok=True)
        if job.audio_object is None:
            return
        try:
            self._sync().delete_object(Bucket=self.bucket, Key=self.full_key(job.audio_object))
        except (BotoCoreError, ClientError) as error:  # the bucket away: the API's sweep removes it later
            logger.warning("Could not remove the upload of task %s from %s: %s", job.task_id, self.description, error)

    def release_scratch(self, job: Job) -> None:
        if job.audio_object is not None:
            job.audio_path.unlink(missing_ok=True)


class MultipartWriter:
    """One upload streamed into the bucket; see the module's docstring for its memory."""

    def __init__(self, storage: S3Storage, key: str) -> None:
        self._storage = storage
        self._key = key
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._sending: list[asyncio.Task[dict[str, Any]]] = []
        self._parts: list[dict[str, Any]] = []
        self._stored = False

    async def write(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= PART_BYTES:
            with memoryview(self._buffer) as view:
                part = bytes(view[:PART_BYTES])  # one copy, not two
            del self._buffer[:PART_BYTES]
            await self._send(part)

    async def _send(self, part: bytes) -> None:
        storage = self._storage
        if self._upload_id is None:
            created = await storage.call(storage.client.create_multipart_upload(Bucket=storage.bucket, Key=self._key))
            self._upload_id = str(created["UploadId"])
        while len(self._sending) >= PARTS_IN_FLIGHT:
            await self._receive_oldest()
        number = len(self._parts) + len(self._sending) + 1
        self._sending.append(asyncio.create_task(self._upload_part(self._upload_id, number, part)))

    async def _upload_part(self, upload_id: str, number: int, body: bytes) -> dict[str, Any]:
        storage = self._storage
        sent = await storage.call(
            storage.client.upload_part(
                Bucket=storage.bucket, Key=self._key, UploadId=upload_id, PartNumber=number, Body=body
            )
        )
        return {"PartNumber": number, "ETag": sent["ETag"]}

    async def _receive_oldest(self) -> None:
        self._parts.append(await self._sending.pop(0))

    async def complete(self) -> None:
        storage = self._storage
        if self._upload_id is None:
            await storage.call(
                storage.client.put_object(Bucket=storage.bucket, Key=self._key, Body=bytes(self._buffer))
            )
        else:
            if self._buffer:
                await self._send(bytes(self._buffer))
            while self._sending:
                await self._receive_oldest()
            await storage.call(
                storage.client.complete_multipart_upload(
                    Bucket=storage.bucket, Key=self._key, UploadId=self._upload_id,
                    MultipartUpload={"Parts": self._parts},
                )
            )  # fmt: skip
            self._upload_id = None
        self._buffer = bytearray()
        self._stored = True

    async def discard(self) -> None:
        for sending in self._sending:
            sending.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)
        self._sending.clear()
        self._buffer = bytearray()
        storage = self._storage
        try:
            if self._upload_id is not None:
                await storage.client.abort_multipart_upload(
                    Bucket=storage.bucket, Key=self._key, UploadId=self._upload_id
                )
                self._upload_id = None
            elif self._stored:
                await storage.client.delete_object(Bucket=storage.bucket, Key=self._key)
                self._stored = False
        except (BotoCoreError, ClientError) as error:  # the bucket away: the sweep aborts or removes it later
            logger.warning("Could not remove an unused upload from %s: %s", storage.description, error)
