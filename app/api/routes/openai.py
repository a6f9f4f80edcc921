"""POST /v1/audio/transcriptions and /v1/audio/translations: OpenAI's endpoints, so its SDKs and tools work.

Synchronous, as OpenAI's is, but the work goes through the same task manager as uploads: the
same engine, the same MAX_CONCURRENT_TASKS cap and queue, the same keys (OpenAI clients send
theirs as `Authorization: Bearer`). The task is removed once answered; a client that hangs up
stops its transcription. With `stream=true` the answer is OpenAI's stream of transcription
events, fed by the text the worker records on the task as it transcribes (`Job.stream`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request, Response, UploadFile
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask

from app.api.deps import CallerDep, ManagerDep, SampleEmbedderDep, SettingsDep, StoreDep
from app.api.errors import UNAUTHORIZED, problem_response
from app.api.filenames import display_name
from app.api.forms import TranscriptionForm, TranslationForm
from app.api.routes.events import PING_SECONDS
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
from app.formats.openai import (
    Granularity,
    OpenAIFormat,
    openai_response,
    stream_error,
    text_delta,
    text_done,
    text_segments,
)
from app.pipeline.base import Job
from app.tasks.async_store import AsyncTaskStore
from app.tasks.backend import TaskBackend
from app.tasks.limits import OverCapacity
from app.tasks.models import TERMINAL, Task, TaskStatus
from app.voices.references import UnusableReference, known_voices

router = APIRouter(prefix="/v1/audio", tags=["openai-compatible"], responses=UNAUTHORIZED, route_class=UploadDirRoute)

# How often a waiting request checks whether its client is still there.
_DISCONNECT_POLL_SECONDS = 1.0
# nginx's "client closed request": logged, never read by anyone.
_CLIENT_CLOSED = 499
STOPPED = "The transcription was stopped before it finished (is the server shutting down?)"


async def _finished(task_id: str, manager: TaskBackend, store: AsyncTaskStore) -> Task | None:
    async for task in manager.events.follow(task_id, store.get):
        if task is None or task.status in TERMINAL:
            return task
    return None


def _responses(success: str, invalid: str, streamed: bool = False) -> dict[int | str, dict[str, Any]]:
    """What both OpenAI-compatible endpoints answer, for /docs."""
    content: dict[str, Any] = {"application/json": {}, "text/plain": {}, "application/x-subrip": {}, "text/vtt": {}}
    return {
        200: {"content": content | ({"text/event-stream": {}} if streamed else {}), "description": success},
        400: problem_response("The multipart body is malformed"),
        413: problem_response(
            "Upload over MAX_UPLOAD_MB, a form field over 64 KB (a known_speaker_references[] over 1 MB), "
            "or audio over MAX_AUDIO_SECONDS"
        ),
        415: problem_response("Not a supported audio or video format"),
        422: problem_response(invalid),
        429: problem_response("The key has MAX_TASKS_PER_KEY tasks pending or processing"),
        500: problem_response("The server failed the transcription (its worker died, or an unexpected error)"),
        503: problem_response("The queue is full, the speech model is not loaded, or the server is shutting down"),
    }


@router.post(
    "/transcriptions",
    summary="Transcribe audio, OpenAI-compatible (synchronous, or streamed with stream=true)",
    responses=_responses(
        "The transcript in the requested response_format; with stream=true, Server-Sent Events "
        "(`transcript.text.delta`, `transcript.text.segment`, `transcript.text.done`, or `error`)",
        "A form field is invalid, a speaker reference is unusable, or the audio could not be transcribed",
        streamed=True,
    ),
)
async def create_transcription(
    request: Request,
    caller: CallerDep,
    settings: SettingsDep,
    manager: ManagerDep,
    store: StoreDep,
    embedder: SampleEmbedderDep,
    form: Annotated[TranscriptionForm, Form(media_type="multipart/form-data")],
) -> Response:
    if form.timestamp_granularities and form.response_format is not OpenAIFormat.VERBOSE_JSON:
        raise HTTPException(422, "timestamp_granularities[]: needs response_format=verbose_json")
    granularities = set(form.timestamp_granularities or [Granularity.SEGMENT])
    chosen_model = choose_model(form.model, settings, openai=True)
    if form.multilingual:
        check_multilingual(manager, language_code(form.language), chosen_model)
    named: tuple[dict[str, object], ...] = ()
    if form.known_speaker_names:
        try:
            named = await known_voices(
                form.known_speaker_names, form.known_speaker_references or [], embedder, settings.upload_dir, caller
            )
        except UnusableReference as error:
            raise HTTPException(422, str(error)) from None
    # Speakers cost time and only diarized_json reports them.
    options = {
        "language": language_code(form.language),
        "enable_diarization": form.response_format is OpenAIFormat.DIARIZED_JSON,
        "initial_prompt": form.prompt or None,
        "temperature": form.temperature,
        "model": chosen_model,
        "multilingual": form.multilingual,
        "identify_speakers": bool(named),
        "known_voices": named,
        "stream": form.stream,
    }
    task, job = await _submit(caller, settings, manager, form.file, options)
    if form.stream:
        return EventSourceResponse(
            _stream(task.id, manager, store, form.response_format),
            ping=PING_SECONDS,
            # Run when the stream ends, however it ends (a client that hangs up included): nothing stays behind.
            background=BackgroundTask(manager.delete, task.id, caller),
        )
    return await _answer(request, caller, manager, store, task, job, form.response_format, granularities)


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
    task, job = await _submit(caller, settings, manager, form.file, options)
    return await _answer(request, caller, manager, store, task, job, fmt, {Granularity.SEGMENT})


async def _submit(
    caller: str, settings: Settings, manager: TaskBackend, file: UploadFile, options: dict[str, Any]
) -> tuple[Task, Job]:
    """Queue the upload's job, with the limits of every upload."""
    path, media, audio_object = await receive_upload(file, settings)
    job = Job(
        task_id=path.name, audio_path=path, audio_object=audio_object, duration=media.duration,
        file_name=display_name(file.filename), **options,
    )  # fmt: skip
    try:
        return await manager.submit(job, caller), job
    except OverCapacity as error:
        path.unlink(missing_ok=True)
        raise refuse_over_capacity(error) from None


async def _answer(
    request: Request,
    caller: str,
    manager: TaskBackend,
    store: AsyncTaskStore,
    task: Task,
    job: Job,
    response_format: OpenAIFormat,
    granularities: set[Granularity],
) -> Response:
    """Answer as OpenAI does, once the task has finished."""
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
        raise HTTPException(503, STOPPED)
    return openai_response(done.result, response_format, granularities, job.duration)


async def _stream(
    task_id: str, manager: TaskBackend, store: AsyncTaskStore, response_format: OpenAIFormat
) -> AsyncIterator[ServerSentEvent]:
    """The task's text as it is transcribed, then its end, as OpenAI's transcription stream events.

    A follower sees the task's latest state (it may skip a step): each state holds all the text so
    far, so the deltas are what it holds beyond what was sent."""
    sent = 0
    async for task in manager.events.follow(task_id, store.get):
        if task is None:
            yield _event(stream_error(STOPPED, "stopped"))
            return
        for text in task.transcribed[sent:]:
            if piece := text.strip():
                yield _event(text_delta(piece if sent == 0 else f" {piece}"))
            sent += 1
        if task.status is TaskStatus.FAILED:
            load_error = manager.worker_state().load_error is not None
            code = "model_unavailable" if load_error else "transcription_failed"
            yield _event(stream_error(f"Transcription failed: {task.error}", code))
            return
        if task.status is TaskStatus.COMPLETED and task.result is not None:
            if response_format is OpenAIFormat.DIARIZED_JSON:
                for segment in text_segments(task.result):
                    yield _event(segment)
            yield _event(text_done(task.result))
            return
    yield _event(stream_error(STOPPED, "stopped"))  # the follow ended without an end: shutting down


def _event(data: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps(data, ensure_ascii=False))
