"""POST /v1/audio/transcriptions and /v1/audio/translations: OpenAI's endpoints, so its SDKs and tools work.

Synchronous, as OpenAI's is, but the work goes through the same task manager as uploads: the
same engine, the same MAX_CONCURRENT_TASKS cap and queue, the same keys (OpenAI clients send
theirs as `Authorization: Bearer`). The task is removed once answered; a client that hangs up
stops its transcription.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request, Response, UploadFile

from app.api.deps import CallerDep, ManagerDep, SettingsDep, StoreDep
from app.api.errors import UNAUTHORIZED, problem_response
from app.api.filenames import display_name
from app.api.forms import TranscriptionForm, TranslationForm
from app.api.upload_body import UploadDirRoute
from app.api.uploads import (
    check_can_translate,
    check_multilingual,
    choose_model,
    language_code,
    receive_upload,
    refuse_over_capacity,
)
from app.config import Settings
from app.formats.openai import Granularity, OpenAIFormat, openai_response
from app.pipeline.base import Job
from app.tasks.async_store import AsyncTaskStore
from app.tasks.backend import TaskBackend
from app.tasks.limits import OverCapacity
from app.tasks.models import TERMINAL, Task, TaskStatus

router = APIRouter(prefix="/v1/audio", tags=["openai-compatible"], responses=UNAUTHORIZED, route_class=UploadDirRoute)

# How often a waiting request checks whether its client is still there.
_DISCONNECT_POLL_SECONDS = 1.0
# nginx's "client closed request": logged, never read by anyone.
_CLIENT_CLOSED = 499


async def _finished(task_id: str, manager: TaskBackend, store: AsyncTaskStore) -> Task | None:
    async for task in manager.events.follow(task_id, store.get):
        if task is None or task.status in TERMINAL:
            return task
    return None


def _responses(success: str, invalid: str) -> dict[int | str, dict[str, Any]]:
    """What both OpenAI-compatible endpoints answer, for /docs."""
    return {
        200: {
            "content": {"application/json": {}, "text/plain": {}, "application/x-subrip": {}, "text/vtt": {}},
            "description": success,
        },
        400: problem_response("The multipart body is malformed"),
        413: problem_response("Upload over MAX_UPLOAD_MB, a form field over 64 KB, or audio over MAX_AUDIO_SECONDS"),
        415: problem_response("Not a supported audio or video format"),
        422: problem_response(invalid),
        429: problem_response("The key has MAX_TASKS_PER_KEY tasks pending or processing"),
        500: problem_response("The server failed the transcription (its worker died, or an unexpected error)"),
        503: problem_response("The queue is full, the speech model is not loaded, or the server is shutting down"),
    }


@router.post(
    "/transcriptions",
    summary="Transcribe audio, OpenAI-compatible (synchronous)",
    responses=_responses(
        "The transcript in the requested response_format",
        "A form field is invalid, or the audio could not be transcribed",
    ),
)
async def create_transcription(
    request: Request,
    caller: CallerDep,
    settings: SettingsDep,
    manager: ManagerDep,
    store: StoreDep,
    form: Annotated[TranscriptionForm, Form(media_type="multipart/form-data")],
) -> Response:
    if form.stream:
        raise HTTPException(
            422, "stream: streamed transcription is not supported; upload to /api/v1/transcribe/upload and "
            "follow /api/v1/transcribe/events/{task_id} for live progress"
        )  # fmt: skip
    if form.timestamp_granularities and form.response_format is not OpenAIFormat.VERBOSE_JSON:
        raise HTTPException(422, "timestamp_granularities[]: needs response_format=verbose_json")
    granularities = set(form.timestamp_granularities or [Granularity.SEGMENT])
    chosen_model = choose_model(form.model, settings, openai=True)
    if form.multilingual:
        check_multilingual(manager, language_code(form.language), chosen_model)
    # Speakers cost time and only diarized_json reports them.
    options = {
        "language": language_code(form.language),
        "enable_diarization": form.response_format is OpenAIFormat.DIARIZED_JSON,
        "initial_prompt": form.prompt or None,
        "temperature": form.temperature,
        "model": chosen_model,
        "multilingual": form.multilingual,
    }
    return await _answer(
        request, caller, settings, manager, store, form.file, options, form.response_format, granularities
    )


@router.post(
    "/translations",
    summary="Translate audio into English text, OpenAI-compatible (synchronous)",
    responses=_responses(
        "The English transcript in the requested response_format",
        "A form field is invalid, the model is English-only, or the audio could not be used",
    ),
)
async def create_translation(
    request: Request,
    caller: CallerDep,
    settings: SettingsDep,
    manager: ManagerDep,
    store: StoreDep,
    form: Annotated[TranslationForm, Form(media_type="multipart/form-data")],
) -> Response:
    chosen_model = choose_model(form.model, settings, openai=True)
    check_can_translate(manager, chosen_model)
    if form.multilingual:
        check_multilingual(manager, None, chosen_model)
    options = {
        "task": "translate", "enable_diarization": False, "initial_prompt": form.prompt or None,
        "temperature": form.temperature, "model": chosen_model, "multilingual": form.multilingual,
    }  # fmt: skip
    fmt = OpenAIFormat(form.response_format.value)
    return await _answer(request, caller, settings, manager, store, form.file, options, fmt, {Granularity.SEGMENT})


async def _answer(
    request: Request,
    caller: str,
    settings: Settings,
    manager: TaskBackend,
    store: AsyncTaskStore,
    file: UploadFile,
    options: dict[str, Any],
    response_format: OpenAIFormat,
    granularities: set[Granularity],
) -> Response:
    """Run one job through the queue and answer as OpenAI does, once it has finished."""
    path, media, audio_object = await receive_upload(file, settings)
    job = Job(
        task_id=path.name, audio_path=path, audio_object=audio_object, duration=media.duration,
        file_name=display_name(file.filename), **options,
    )  # fmt: skip
    try:
        task = await manager.submit(job, caller)
    except OverCapacity as error:
        path.unlink(missing_ok=True)
        raise refuse_over_capacity(error) from None
    waiter = asyncio.create_task(_finished(task.id, manager, store))
    try:
        while not waiter.done():
            await asyncio.wait({waiter}, timeout=_DISCONNECT_POLL_SECONDS)
            if not waiter.done() and await request.is_disconnected():
                return Response(status_code=_CLIENT_CLOSED)
        done = waiter.result()
    finally:
        waiter.cancel()
        await manager.delete(task.id, caller)  # answered or abandoned: nothing stays behind

    if done is not None and done.status is TaskStatus.FAILED:
        # The input's fault is the caller's to fix (422); a worker that died or failed unexpectedly is the server's.
        status = 503 if manager.worker_state().load_error else 500 if done.server_fault else 422
        raise HTTPException(status, f"Transcription failed: {done.error}")
    if done is None or done.result is None:
        raise HTTPException(503, "The transcription was stopped before it finished (is the server shutting down?)")
    return openai_response(done.result, response_format, granularities, job.duration)
