"""Multipart uploads written once, straight into UPLOAD_DIR.

Starlette's form parser spools every file part to a temporary file (on disk past 1 MB), which
the route would then copy into UPLOAD_DIR: each upload written twice, and the spool outside the
directory's limits and permissions. Routes of `UploadDirRoute` parse the body with a subclass of
Starlette's own parser (python-multipart's streaming parser underneath) whose file parts are
private files in UPLOAD_DIR, under a fresh task id, from the first byte. A part that no task
adopted by the time the route returns (a refused or failed request) is removed.

With STORAGE_URL, each file part also goes into the bucket as it arrives (app/storage/s3.py):
the file in UPLOAD_DIR is then a scratch copy for ffprobe, removed when the request ends, and the
object is what a task keeps. A bucket that cannot be reached answers 503, at the first part sent.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import aclosing
from pathlib import Path
from typing import Any, TypeVar

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute
from python_multipart.multipart import parse_options_header
from starlette.datastructures import FormData, Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from app.api.errors import STORE_UNREACHABLE
from app.storage import ObjectWriter, Storage, StorageUnavailable
from app.tasks.files import create_private, new_upload_path

logger = logging.getLogger(__name__)

DISK_FULL = (
    "The server's disk is full, so the upload could not be stored; try again later, and tell the "
    "server's operator if it persists."
)


class StoredUpload(UploadFile):
    """A file part as it was received: already in UPLOAD_DIR at `path`, and with a bucket, in it
    under `key` too (once `finish` has returned)."""

    def __init__(self, path: Path, filename: str | None, headers: Headers, storage: Storage, key: str) -> None:
        super().__init__(create_private(path), size=0, filename=filename, headers=headers)
        self.path = path
        self.key = key
        self.copy: ObjectWriter | None = storage.writer(key)

    @property
    def audio_object(self) -> str | None:
        """The key a job records: None when UPLOAD_DIR is the storage."""
        return self.key if self.copy is not None else None

    async def write(self, data: bytes) -> None:
        await super().write(data)
        if self.copy is not None:
            await self.copy.write(data)

    async def finish(self) -> None:
        """The upload was accepted: make it a whole object in the bucket (nothing to do in UPLOAD_DIR)."""
        if self.copy is not None:
            await self.copy.complete()

    async def discard(self) -> None:
        self.path.unlink(missing_ok=True)
        if self.copy is not None:
            await self.copy.discard()


class _FieldTooLarge(MultiPartException):
    """A field other than the file is over the form's part limit: 413, naming the field."""

    def __init__(self, field: str, limit: int) -> None:
        super().__init__(
            f"{field[:40]}: this field is longer than the {limit // 1024} KB a form field may have "
            "(only the file may be larger); shorten it."
        )


class _UploadDirParser(MultiPartParser):
    def __init__(
        self, headers: Headers, stream: Any, upload_dir: Path, name_key: Callable[[str], str], storage: Storage,
        **limits: Any,
    ) -> None:  # fmt: skip
        super().__init__(headers, stream, **limits)
        self.upload_dir = upload_dir
        self.name_key = name_key
        self.storage = storage
        self.stored: list[StoredUpload] = []

    def on_headers_finished(self) -> None:
        super().on_headers_finished()  # checks the part's name and the limits on files and fields
        spooled = self._current_part.file
        if spooled is not None:
            spooled.file.close()  # nothing was written to it yet
            path = new_upload_path(self.upload_dir)
            key = self.name_key(path.name)
            stored = StoredUpload(path, spooled.filename, spooled.headers, self.storage, key)
            self._current_part.file = stored
            self._files_to_close_on_error.append(stored.file)  # type: ignore[arg-type]
            self.stored.append(stored)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._current_part
        if part.file is None and len(part.data) + end - start > self.max_part_size:
            raise _FieldTooLarge(part.field_name, self.max_part_size)
        super().on_part_data(data, start, end)


class _UploadDirRequest(Request):
    stored: list[StoredUpload]
    samples: bool

    async def _get_form(self, **limits: Any) -> FormData:
        content_type, _ = parse_options_header(self.headers.get("content-type", ""))
        if self._form is None and content_type == b"multipart/form-data":
            upload_dir: Path = self.app.state.settings.upload_dir
            storage: Storage = self.app.state.storage
            owner = str(self.state.api_key_id)
            make_key = storage.sample_key if self.samples else storage.upload_key
            async with aclosing(self.stream()) as stream:
                parser = _UploadDirParser(
                    self.headers, stream, upload_dir, lambda name: make_key(owner, name), storage, **limits
                )
                self.stored = parser.stored
                try:
                    self._form = await parser.parse()
                except _FieldTooLarge as error:
                    raise HTTPException(413, error.message, {"Connection": "close"}) from None
                except MultiPartException as error:
                    raise HTTPException(400, error.message) from None
                except StorageUnavailable as error:
                    raise HTTPException(503, str(error)) from None
                except OSError as error:
                    if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                        raise
                    logger.error("No space left in UPLOAD_DIR %s: an upload was refused with 507", upload_dir)
                    raise HTTPException(507, DISK_FULL) from None
        return await super()._get_form(**limits)


BeforeBody = Callable[[Request], Awaitable[None]]
_Endpoint = TypeVar("_Endpoint", bound=Callable[..., Any])


def before_body(check: BeforeBody) -> Callable[[_Endpoint], _Endpoint]:
    """Marks an endpoint of an UploadDirRoute: `check` runs once the request is routed, before a byte of
    its body is read or stored, and may refuse it by raising HTTPException (a path parameter that names
    nothing, say: 404 before the upload, not after)."""

    def mark(endpoint: _Endpoint) -> _Endpoint:
        setattr(endpoint, "before_body", check)  # noqa: B010 - an attribute mypy does not know functions have
        return endpoint

    return mark


class UploadDirRoute(APIRoute):
    samples = False
    """Whether the file parts are enrolment samples (kept only while embedded) rather than tasks' uploads."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()
        check: BeforeBody | None = getattr(self.endpoint, "before_body", None)

        async def handle_upload(request: Request) -> Response:
            if check is not None:
                await check(request)
            request = _UploadDirRequest(request.scope, request.receive)
            request.stored = []
            request.samples = self.samples
            try:
                return await handle(request)
            finally:
                store = request.app.state.store
                for upload in request.stored:
                    await upload.close()
                    try:
                        kept = await store.get(upload.path.name) is not None
                    except STORE_UNREACHABLE:  # the answer stands; the start-up sweep removes a file left over
                        kept = True
                    if not kept:
                        await upload.discard()
                    elif upload.copy is not None:
                        upload.path.unlink(missing_ok=True)  # a scratch copy: the task keeps the object

        return handle_upload


class SampleUploadRoute(UploadDirRoute):
    samples = True
