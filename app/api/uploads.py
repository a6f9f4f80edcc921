"""Receiving an audio upload: shared by the task API and the OpenAI-compatible endpoint."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path
from typing import BinaryIO

from fastapi import HTTPException, UploadFile
from whisperx.utils import LANGUAGES, TO_LANGUAGE_CODE

from app.config import Settings
from app.media import MediaError, MediaInfo, UnsupportedMediaError, probe
from app.tasks.manager import RETRY_AFTER_SECONDS, OverCapacity
from app.outbound import TargetRefused, check_target
from app.webhooks import CALLBACK


def language_code(language: str | None) -> str | None:
    """A Whisper language code from a code or a name; None to detect it; 422 when unknown."""
    if language is None or not language.strip():
        return None
    value = language.strip().lower()
    code = value if value in LANGUAGES else TO_LANGUAGE_CODE.get(value)
    if code is None:
        raise HTTPException(
            422,
            # Shortened: the value is the client's and may be a megabyte long.
            f"language: {language[:40]!r} is not a language Whisper knows; use a code such as en, de or fr, or omit it",
        )
    return code


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds:.0f} s"


def refuse_over_capacity(error: OverCapacity) -> HTTPException:
    """429 (this key's limit) or 503 (queue full), with when to try again."""
    return HTTPException(error.status, error.detail, {"Retry-After": str(RETRY_AFTER_SECONDS)})


def _save(source: BinaryIO, target: Path) -> int:
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as out:
        shutil.copyfileobj(source, out, 1024 * 1024)
        return out.tell()


async def receive_upload(file: UploadFile, settings: Settings) -> tuple[Path, MediaInfo]:
    """Save the upload under a fresh task id and check what it is; 415/422 when it cannot be used.

    The file's name is the task id: the client's file name never touches the file system.
    """
    path = settings.upload_dir / str(uuid.uuid4())
    try:
        if await asyncio.to_thread(_save, file.file, path) == 0:
            raise HTTPException(422, "The uploaded file is empty.")
        info = await probe(path, settings.ffmpeg_timeout_seconds)
        if info.duration is not None and info.duration > settings.max_audio_seconds:
            raise HTTPException(
                413,
                f"The audio lasts {_hours(info.duration)}; this server accepts at most "
                f"{_hours(settings.max_audio_seconds)} (MAX_AUDIO_SECONDS={settings.max_audio_seconds:g}). "
                "Split the file into shorter parts.",
            )
        return path, info
    except UnsupportedMediaError as error:
        path.unlink(missing_ok=True)
        raise HTTPException(415, str(error)) from None
    except MediaError as error:
        path.unlink(missing_ok=True)
        raise HTTPException(422, str(error)) from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise


async def check_callback(url: str, settings: Settings) -> None:
    """422 unless this server can sign callbacks and may call the URL."""
    if settings.webhook_secret is None:
        raise HTTPException(
            422, "callback_url: this server has no WEBHOOK_SECRET to sign callbacks with, so it sends none; "
            "poll the status or follow the events stream instead"
        )  # fmt: skip
    try:
        await check_target(url, settings.webhook_allow_private, CALLBACK)
    except TargetRefused as error:
        raise HTTPException(422, str(error)) from None
