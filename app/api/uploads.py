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
from app.media import MediaError, MediaInfo, UnsupportedMediaError, probe, too_long_message
from app.outbound.downloads import AUDIO_URL
from app.outbound.guard import TargetRefused, check_target
from app.outbound.webhooks import CALLBACK
from app.tasks.backend import TaskBackend
from app.tasks.limits import RETRY_AFTER_SECONDS, OverCapacity


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


def refuse_over_capacity(error: OverCapacity) -> HTTPException:
    """429 (this key's limit) or 503 (queue full), with when to try again."""
    return HTTPException(error.status, error.detail, {"Retry-After": str(RETRY_AFTER_SECONDS)})


def _save(source: BinaryIO, target: Path) -> int:
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as out:
        shutil.copyfileobj(source, out, 1024 * 1024)
        return out.tell()


def new_upload_path(settings: Settings) -> Path:
    """Where a new task's audio goes; its name is the task id (a client's file name never touches the disk)."""
    return settings.upload_dir / str(uuid.uuid4())


async def receive_upload(file: UploadFile, settings: Settings) -> tuple[Path, MediaInfo]:
    """Save the upload under a fresh task id and check what it is; 415/422 when it cannot be used."""
    path = new_upload_path(settings)
    try:
        if await asyncio.to_thread(_save, file.file, path) == 0:
            raise HTTPException(422, "The uploaded file is empty.")
        info = await probe(path, settings.ffmpeg_timeout_seconds)
        if (too_long := too_long_message(info, settings.max_audio_seconds)) is not None:
            raise HTTPException(413, too_long)
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


async def check_audio_url(url: str, settings: Settings) -> None:
    """422 unless the server may download from the URL (checked again, hop by hop, as it downloads)."""
    try:
        await check_target(url, settings.audio_url_allow_private, AUDIO_URL)
    except TargetRefused as error:
        raise HTTPException(422, str(error)) from None


def check_can_translate(manager: TaskBackend) -> None:
    """422 when the loaded model is English-only: it cannot translate."""
    info = manager.worker_state().info
    if info is not None and not info.multilingual:
        raise HTTPException(
            422, f"task: the model {info.model} is English-only and cannot translate; use task=transcribe, "
            "or ask the server's operator for a multilingual WHISPER_MODEL (such as base or large-v2)"
        )  # fmt: skip
