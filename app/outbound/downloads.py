"""audio_url: the server fetches the caller's audio into UPLOAD_DIR, then treats it as an upload.

Runs in the API process (async httpx streaming; the task shows `pending`, stage `downloading`)
before the task is queued, so no worker and its models wait on a slow network. The same limits
as an upload apply: MAX_UPLOAD_MB (declared or counted), MAX_AUDIO_SECONDS and ffprobe's content
check; plus AUDIO_URL_TIMEOUT_SECONDS for the whole download. Requests go through
`GuardedTransport` (app/outbound/guard.py), so neither the URL nor any redirect can reach a loopback,
private or metadata address unless AUDIO_URL_ALLOW_PRIVATE is set. Redirects are followed here,
one hop at a time, at most MAX_REDIRECTS.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from app.config import Settings
from app.media import MediaError, probe, too_large_message, too_long_message
from app.outbound.guard import GuardedTransport, Target, TargetRefused
from app.pipeline.base import Job
from app.storage import ObjectWriter, Storage, StorageUnavailable
from app.tasks.files import create_private
from app.tasks.lifecycle import PrepareFailed

AUDIO_URL = Target(field="audio_url", allow_setting="AUDIO_URL_ALLOW_PRIVATE")
MAX_REDIRECTS = 5
# Connecting and each read; the whole download is bounded by AUDIO_URL_TIMEOUT_SECONDS.
_STEP_TIMEOUT_SECONDS = 30.0
# A compressed body of a few kilobytes can decode to gigabytes, and httpx decodes each arriving
# chunk whole, before any limit could be checked. Audio and video are compressed already, so a
# transfer encoding gains nothing: ask for none, read the raw bytes, and refuse an answer that
# is compressed anyway rather than decode it.
_NO_COMPRESSION = "identity"
_REQUEST_HEADERS = {"accept": "audio/*, video/*;q=0.9, */*;q=0.5", "accept-encoding": _NO_COMPRESSION}


async def download_audio(
    job: Job, settings: Settings, storage: Storage, key: str, on_progress: Callable[[float], Awaitable[None]]
) -> Job:
    """Fetch `job.audio_url` to `job.audio_path` and check it; the job with its duration.

    With a bucket, the bytes also go there as they arrive, under `key`, and the local file is a
    scratch copy for ffprobe, removed at the end. Whatever goes wrong (or a cancel, when the task
    is deleted), nothing is left on disk or in the bucket.
    """
    if job.audio_url is None:
        raise ValueError("the job has no audio_url")
    copy = storage.writer(key)
    try:
        try:
            async with asyncio.timeout(settings.audio_url_timeout_seconds):
                await _fetch(job.audio_url, job.audio_path, settings, on_progress, copy)
            info = await probe(job.audio_path, settings.ffmpeg_timeout_seconds)
        except TimeoutError:
            raise PrepareFailed(
                f"audio_url: the download took longer than {settings.audio_url_timeout_seconds:g} s "
                "(AUDIO_URL_TIMEOUT_SECONDS); upload the file instead, or use a faster source."
            ) from None
        except TargetRefused as error:
            raise PrepareFailed(str(error)) from None
        except httpx.HTTPError as error:
            raise PrepareFailed(
                f"audio_url: the download failed ({type(error).__name__}); check that the URL is reachable."
            ) from None
        except MediaError as error:
            raise PrepareFailed(f"audio_url: the downloaded content is not usable: {error}") from None
        if (too_long := too_long_message(info, settings.max_audio_seconds)) is not None:
            raise PrepareFailed(f"audio_url: {too_long}")
        if copy is None:
            return dataclasses.replace(job, duration=info.duration)
        await copy.complete()
        job.audio_path.unlink(missing_ok=True)  # the scratch copy: the bucket holds the audio now
        return dataclasses.replace(job, duration=info.duration, audio_object=key)
    except StorageUnavailable as error:
        job.audio_path.unlink(missing_ok=True)
        if copy is not None:
            await copy.discard()
        raise PrepareFailed(f"audio_url: the download could not be stored. {error}") from None
    except BaseException:
        job.audio_path.unlink(missing_ok=True)
        if copy is not None:
            await copy.discard()
        raise


async def _fetch(
    url: str,
    path: Path,
    settings: Settings,
    on_progress: Callable[[float], Awaitable[None]],
    copy: ObjectWriter | None,
) -> None:
    limit = settings.max_upload_bytes
    transport = GuardedTransport(settings.audio_url_allow_private, AUDIO_URL)
    async with httpx.AsyncClient(transport=transport, follow_redirects=False, timeout=_STEP_TIMEOUT_SECONDS) as client:
        for _ in range(MAX_REDIRECTS + 1):
            async with client.stream("GET", url, headers=_REQUEST_HEADERS) as response:
                if response.is_redirect:
                    location = response.headers.get("location")
                    if not location:
                        raise PrepareFailed(f"audio_url: HTTP {response.status_code} redirect without a Location")
                    url = str(response.url.join(location))  # checked by the transport on the next request
                    continue
                if not response.is_success:
                    raise PrepareFailed(
                        f"audio_url: the server answered HTTP {response.status_code}; check the URL and that "
                        "it needs no login."
                    )
                media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if media_type == "text/html":
                    raise PrepareFailed(
                        "audio_url: the URL returned a web page (text/html), not audio; give a direct link to the "
                        "audio or video file."
                    )
                encoding = response.headers.get("content-encoding", _NO_COMPRESSION).strip().lower()
                if encoding != _NO_COMPRESSION:
                    raise PrepareFailed(
                        f"audio_url: the server sent the file compressed (Content-Encoding: {encoding[:40]}); this "
                        "server downloads only uncompressed files (it asks for Accept-Encoding: identity). Serve the "
                        "file as it is, or upload it."
                    )
                declared = response.headers.get("content-length", "")
                total = int(declared) if declared.isdigit() else None
                if total is not None and total > limit:
                    raise PrepareFailed(f"audio_url: {too_large_message(limit)}")
                await _save(response, path, limit, total, on_progress, copy)
                return
    raise PrepareFailed(f"audio_url: more than {MAX_REDIRECTS} redirects; give the final URL of the file.")


async def _save(
    response: httpx.Response,
    path: Path,
    limit: int,
    total: int | None,
    on_progress: Callable[[float], Awaitable[None]],
    copy: ObjectWriter | None,
) -> None:
    received = 0
    with create_private(path) as out:
        # Raw bytes, never decoded (the answer is uncompressed, see _NO_COMPRESSION): the limit is
        # on what arrives, which is what lands on disk.
        async for chunk in response.aiter_raw():  # as it arrives: progress moves with the network
            received += len(chunk)
            if received > limit:
                raise PrepareFailed(f"audio_url: {too_large_message(limit)}")
            out.write(chunk)
            if copy is not None:
                await copy.write(chunk)
            if total:
                await on_progress(received / total)
    if received == 0:
        raise PrepareFailed("audio_url: the URL returned no content.")
    await on_progress(1.0)
