"""Receiving an audio upload: shared by the task API and the OpenAI-compatible endpoint."""

from __future__ import annotations

from pathlib import Path

from fastapi import HTTPException, UploadFile
from whisperx.utils import LANGUAGES, TO_LANGUAGE_CODE

from app.api.upload_body import StoredUpload
from app.config import Settings
from app.media import MediaError, MediaInfo, UnsupportedMediaError, probe, too_long_message
from app.outbound.downloads import AUDIO_URL
from app.outbound.guard import TargetRefused, check_target
from app.outbound.webhooks import CALLBACK
from app.pipeline.models import allowed_whisper_models
from app.storage import StorageUnavailable
from app.tasks.backend import TaskBackend
from app.tasks.files import new_upload_path as new_path_in
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


def new_upload_path(settings: Settings) -> Path:
    """Where a new task's audio goes (an `audio_url` download)."""
    return new_path_in(settings.upload_dir)


async def receive_upload(file: UploadFile, settings: Settings) -> tuple[Path, MediaInfo, str | None]:
    """Check what the upload is (already in UPLOAD_DIR under a fresh task id, see app/api/upload_body.py);
    415/422 when it cannot be used. With a bucket, the upload is then made whole there (503 when the
    bucket cannot be reached); the key in it comes third."""
    if not isinstance(file, StoredUpload):
        raise TypeError("upload routes must use UploadDirRoute, which stores file parts in UPLOAD_DIR")
    path = file.path
    try:
        if file.size == 0:
            raise HTTPException(422, "The uploaded file is empty.")
        info = await probe(path, settings.ffmpeg_timeout_seconds)
        if (too_long := too_long_message(info, settings.max_audio_seconds)) is not None:
            raise HTTPException(413, too_long)
        await file.finish()
        return path, info, file.audio_object
    except StorageUnavailable as error:
        path.unlink(missing_ok=True)
        raise HTTPException(503, str(error)) from None
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


OPENAI_MODELS = frozenset({"whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-4o-transcribe-diarize"})
"""OpenAI's own model names, as its clients send them: here they mean the server's default model."""


def choose_model(requested: str | None, settings: Settings, *, openai: bool = False) -> str | None:
    """The Whisper model a request chose, checked against WHISPER_MODELS; None for the default."""
    if requested is None or not requested.strip() or requested.strip() in OPENAI_MODELS:
        return None
    allowed = allowed_whisper_models(settings)
    if requested.strip() not in allowed:
        # OpenAI's clients must send a model: theirs is what means the default there.
        default = "send whisper-1" if openai else "leave it out"
        raise HTTPException(
            # Shortened: the value is the client's and may be as long as a form field may be.
            422, f"model: {requested.strip()[:60]!r} is not offered by this server; choose one of: "
            f"{', '.join(allowed)} (or {default} for {allowed[0]}; the operator sets the list with WHISPER_MODELS)"
        )  # fmt: skip
    return requested.strip()


def _english_only_model(manager: TaskBackend, model: str | None) -> str | None:
    """The name of the model a request would run, when that model is English-only; else None."""
    info = manager.worker_state().info
    if model is not None and (info is None or model != info.model):
        # Whisper's own naming; other models are checked by the worker.
        return model if model.endswith(".en") else None
    return info.model if info is not None and not info.multilingual else None


def check_can_translate(manager: TaskBackend, model: str | None = None) -> None:
    """422 when the model is English-only: it cannot translate."""
    if (english_only := _english_only_model(manager, model)) is not None:
        raise HTTPException(
            422, f"task: the model {english_only} is English-only and cannot translate; "
            "use task=transcribe with it, or choose a multilingual model (such as base or large-v2)"
        )  # fmt: skip


def check_multilingual(manager: TaskBackend, language: str | None, model: str | None = None) -> None:
    """422 when `multilingual` cannot work: a language was also given, or the model is English-only."""
    if language is not None:
        raise HTTPException(
            422, "multilingual: detects the language of each part itself; leave language empty, or leave "
            "multilingual off to transcribe everything in the given language"
        )  # fmt: skip
    if (english_only := _english_only_model(manager, model)) is not None:
        raise HTTPException(
            422, f"multilingual: the model {english_only} is English-only; "
            "leave multilingual off, or choose a multilingual model (such as base or large-v2)"
        )  # fmt: skip
