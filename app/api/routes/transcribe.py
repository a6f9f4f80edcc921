"""The seed's transcription endpoints (upload, status, result, delete) and the caller's task list.

A task belongs to the key that created it: for any other key it does not exist (404).
"""

from __future__ import annotations

import functools
import json
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Query, Response, UploadFile, status

from app.api.deps import (
    CallerDep,
    ManagerDep,
    OwnedTaskDep,
    SettingsDep,
    StoreDep,
    SubtitleOptionsDep,
    VoiceStoreDep,
    not_found,
)
from app.api.errors import UNAUTHORIZED, problem_response
from app.api.routes.speakers import owned_voices
from app.api.schemas import (
    DeleteResponse,
    TaskList,
    TaskStatusResponse,
    TaskSummary,
    TranscriptionResult,
    TranscriptionTask,
    UploadResponse,
)
from app.api.uploads import (
    check_audio_url,
    check_callback,
    check_can_translate,
    language_code,
    new_upload_path,
    receive_upload,
    refuse_over_capacity,
)
from app.formats.exports import MEDIA_TYPES, ExportFormat, render
from app.media import SUPPORTED_EXTENSIONS
from app.outbound.downloads import download_audio
from app.pipeline.base import Job
from app.tasks.manager import OverCapacity
from app.tasks.models import Task, TaskStatus

MAX_PROMPT_CHARS = 2000
"""Whisper reads at most 223 tokens of prompt (its last ones); more text than this is a mistake."""
MAX_URL_CHARS = 4096
MAX_BEAM_SIZE = 20
DEFAULT_VAD_ONSET = 0.5
"""Both engines' (whisperx's and faster-whisper's Silero VAD) default speech threshold."""

router = APIRouter(prefix="/api/v1/transcribe", tags=["transcription"], responses=UNAUTHORIZED)

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: problem_response("No task with this id for this key (never existed, deleted or expired)")
}


def _voice_names(value: str | None) -> tuple[bool, list[str] | None]:
    """identify_speakers as (on, the names to consider; None: all of the key's voices)."""
    text = (value or "").strip()
    if text.lower() in ("", "false", "0", "no", "off"):
        return False, None
    if text.lower() in ("true", "1", "yes", "on"):
        return True, None
    if text.startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError:
            names = None
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise HTTPException(422, 'identify_speakers: give true, or names as "Alice, Bob" or ["Alice", "Bob"]')
    else:
        names = text.split(",")
    wanted = [name.strip() for name in names if name.strip()]
    return bool(wanted), wanted or None


def _summary(task: Task) -> dict[str, Any]:
    return {
        "task_id": task.id,
        "status": task.status,
        "progress": task.progress,
        "message": task.message,
        "created_at": task.created_at,
        "started_at": task.started_at,
        "completed_at": task.completed_at,
        "error": task.error,
    }


@router.post(
    "/upload",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=UploadResponse,
    summary="Upload audio or video (or give its URL) for transcription",
    responses={
        400: problem_response("The multipart body is malformed, or a form field is over 1 MB"),
        413: problem_response("Upload over MAX_UPLOAD_MB, or audio over MAX_AUDIO_SECONDS"),
        415: problem_response("Not a supported audio or video format"),
        422: problem_response("A form field is invalid, the file has no audio, or audio_url may not be used"),
        429: problem_response("The key has MAX_TASKS_PER_KEY tasks pending or processing"),
        503: problem_response("MAX_QUEUE_SIZE tasks are waiting; see Retry-After"),
    },
)
async def upload(
    response: Response,
    caller: CallerDep,
    settings: SettingsDep,
    manager: ManagerDep,
    voices: VoiceStoreDep,
    file: Annotated[
        UploadFile | None,
        File(description=f"Audio or video: {', '.join(SUPPORTED_EXTENSIONS)}. Give this or `audio_url`"),
    ] = None,
    language: Annotated[
        str | None, Form(description="Language code such as `en`; omit to detect it", examples=["en"])
    ] = None,
    min_speakers: Annotated[int | None, Form(ge=1, description="Fewest speakers to find")] = None,
    max_speakers: Annotated[int | None, Form(ge=1, description="Most speakers to find")] = None,
    enable_diarization: Annotated[bool, Form(description="Label speakers")] = True,
    prompt: Annotated[
        str | None,
        Form(max_length=MAX_PROMPT_CHARS, description="The same as `initial_prompt` (the earlier name)"),
    ] = None,
    callback_url: Annotated[
        str | None, Form(description="POSTed the signed status document when the task completes or fails")
    ] = None,
    audio_url: Annotated[
        str | None,
        Form(
            max_length=MAX_URL_CHARS,
            description="An http(s) URL the server downloads the audio from, instead of `file` (give one of the "
            "two). Subject to MAX_UPLOAD_MB, MAX_AUDIO_SECONDS and AUDIO_URL_TIMEOUT_SECONDS; non-public "
            "addresses are refused unless AUDIO_URL_ALLOW_PRIVATE is set",
            examples=["https://example.com/recordings/meeting.mp3"],
        ),
    ] = None,
    task: Annotated[
        TranscriptionTask,
        Form(description="`transcribe` (default), or `translate` into English (multilingual models only)"),
    ] = TranscriptionTask.TRANSCRIBE,
    initial_prompt: Annotated[
        str | None,
        Form(
            max_length=MAX_PROMPT_CHARS,
            description="Text Whisper reads as if it came before the audio: teaches it the spelling of names "
            "and terms, and a style",
            examples=["Minutes of the Qorvath Industries board meeting, chaired by Siobhan Ní Dhuibhir."],
        ),
    ] = None,
    hotwords: Annotated[
        str | None,
        Form(
            max_length=MAX_PROMPT_CHARS,
            description="Words to expect (names, jargon), separated by spaces or commas",
            examples=["Kubernetes, PostgreSQL, Ní Dhuibhir"],
        ),
    ] = None,
    beam_size: Annotated[
        int | None,
        Form(
            ge=1,
            le=MAX_BEAM_SIZE,
            description="Beams searched while decoding (default: the server's BEAM_SIZE)",
            examples=[5],
        ),
    ] = None,
    temperature: Annotated[
        float | None,
        Form(
            ge=0,
            le=1,
            description="Sampling temperature; omit for Whisper's fallback schedule (0, 0.2, … 1)",
            examples=[0.0],
        ),
    ] = None,
    vad_onset: Annotated[
        float | None,
        Form(
            gt=0,
            lt=1,
            description="Speech probability at which voice activity starts; lower finds quieter speech (default 0.5)",
            examples=[0.5],
        ),
    ] = None,
    vad_offset: Annotated[
        float | None,
        Form(
            gt=0,
            lt=1,
            description="Speech probability below which voice activity ends; at most `vad_onset` "
            "(default: 0.15 below vad_onset)",
            examples=[0.35],
        ),
    ] = None,
    chunk_size: Annotated[
        int | None,
        Form(ge=1, le=30, description="Longest stretch of speech transcribed as one piece, seconds (default 30)"),
    ] = None,
    suppress_numerals: Annotated[
        bool, Form(description="Spell numbers out as words: no digits, %, $ or £ in the text")
    ] = False,
    return_char_alignments: Annotated[
        bool, Form(description="Also time each character (`chars` in segments); only with wav2vec2 alignment")
    ] = False,
    identify_speakers: Annotated[
        str | None,
        Form(
            max_length=MAX_PROMPT_CHARS,
            description="Name the speakers who match this key's enrolled voices (/api/v1/speakers): `true` for "
            'all of them, or the names to consider, as "Alice, Bob" or ["Alice", "Bob"]',
            examples=["true"],
        ),
    ] = None,
) -> UploadResponse:
    code = language_code(language)
    identify, wanted_names = _voice_names(identify_speakers)
    if identify and not enable_diarization:
        raise HTTPException(422, "identify_speakers: speakers are named after diarization; keep enable_diarization on")
    known_voices = owned_voices(voices, caller, wanted_names) if identify else ()
    if (file is None) == (audio_url is None):
        raise HTTPException(
            422,
            "file: give either file (the audio itself) or audio_url (where to download it), not both"
            if file is not None
            else "file: Field required (upload the audio as file, or give audio_url)",
        )
    if audio_url is not None:
        await check_audio_url(audio_url, settings)
    if callback_url:
        await check_callback(callback_url, settings)
    if min_speakers is not None and max_speakers is not None and min_speakers > max_speakers:
        raise HTTPException(422, f"min_speakers ({min_speakers}) cannot be larger than max_speakers ({max_speakers})")
    onset = f"{vad_onset:g}" if vad_onset is not None else f"{DEFAULT_VAD_ONSET:g}, the default"
    if vad_offset is not None and vad_offset > (vad_onset or DEFAULT_VAD_ONSET):
        raise HTTPException(422, f"vad_offset ({vad_offset:g}) cannot be larger than vad_onset ({onset})")
    if prompt and initial_prompt and prompt != initial_prompt:
        raise HTTPException(422, "prompt: give the prompt once, as initial_prompt (prompt is its earlier name)")
    if task is TranscriptionTask.TRANSLATE:
        check_can_translate(manager)
    try:
        # UploadAdmissionMiddleware checked before the body arrived; the queue may have filled since.
        manager.check_capacity(caller)
    except OverCapacity as error:
        raise refuse_over_capacity(error) from None

    options: dict[str, Any] = {
        "language": code, "min_speakers": min_speakers, "max_speakers": max_speakers,
        "enable_diarization": enable_diarization, "initial_prompt": initial_prompt or prompt or None,
        "callback_url": callback_url or None, "task": task.value, "hotwords": hotwords or None,
        "beam_size": beam_size, "temperature": temperature, "vad_onset": vad_onset, "vad_offset": vad_offset,
        "chunk_size": chunk_size, "suppress_numerals": suppress_numerals,
        "return_char_alignments": return_char_alignments,
        "identify_speakers": identify, "known_voices": known_voices,
    }  # fmt: skip
    prepare = None
    if file is not None:
        path, media = await receive_upload(file, settings)
        job = Job(task_id=path.name, audio_path=path, duration=media.duration, **options)
    else:
        path = new_upload_path(settings)
        job = Job(task_id=path.name, audio_path=path, audio_url=audio_url, **options)
        prepare = functools.partial(download_audio, job, settings)
    try:
        created = manager.submit(job, caller, prepare)
    except OverCapacity as error:
        path.unlink(missing_ok=True)
        raise refuse_over_capacity(error) from None
    response.headers["Location"] = router.url_path_for("get_status", task_id=job.task_id)
    return UploadResponse(
        task_id=created.id,
        status=created.status,
        message="Task queued; poll the Location URL for progress"
        if prepare is None
        else "Downloading audio_url; poll the Location URL for progress",
    )


@router.get("/status/{task_id}", response_model=TaskStatusResponse, responses=_NOT_FOUND, summary="Task progress")
async def get_status(task: OwnedTaskDep) -> TaskStatusResponse:
    return TaskStatusResponse.from_task(task)


@router.get("/tasks", response_model=TaskList, summary="The caller's tasks, newest first")
async def list_tasks(
    caller: CallerDep,
    store: StoreDep,
    status: Annotated[TaskStatus | None, Query(description="Only tasks in this status")] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Tasks per page")] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000, description="Tasks to skip")] = 0,
) -> TaskList:
    tasks, total = store.page(caller, status, limit, offset)
    return TaskList(tasks=[TaskSummary(**_summary(task)) for task in tasks], total=total, limit=limit, offset=offset)


@router.get(
    "/result/{task_id}",
    response_model=TranscriptionResult,
    response_model_exclude_none=False,
    responses={
        200: {"content": {MEDIA_TYPES[fmt]: {} for fmt in ExportFormat if fmt is not ExportFormat.JSON}},
        **_NOT_FOUND,
        409: problem_response("The task has not completed"),
    },
    summary="Transcript of a completed task, as JSON or a subtitle/text file",
)
async def get_result(
    task: OwnedTaskDep,
    subtitles: SubtitleOptionsDep,
    fmt: Annotated[ExportFormat, Query(alias="format", description="json (default), srt, vtt, txt or tsv")] = (
        ExportFormat.JSON
    ),
) -> TranscriptionResult | Response:
    if task.status is TaskStatus.FAILED:
        raise HTTPException(409, f"Task {task.id} failed, so it has no result: {task.error}")
    if task.status is not TaskStatus.COMPLETED or task.result is None:
        raise HTTPException(409, f"Task {task.id} is {task.status.value} ({task.progress:.0f}%); try again later.")
    if fmt is not ExportFormat.JSON:
        return Response(
            render(task.result, fmt, subtitles),
            media_type=f"{MEDIA_TYPES[fmt]}; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{task.id}.{fmt.value}"'},
        )
    return TranscriptionResult.model_validate(task.result)


@router.delete("/task/{task_id}", response_model=DeleteResponse, responses=_NOT_FOUND, summary="Delete a task")
async def delete_task(task_id: str, caller: CallerDep, manager: ManagerDep) -> DeleteResponse:
    if not manager.delete(task_id, caller):
        raise not_found(task_id)
    return DeleteResponse(task_id=task_id, message="Task deleted; any running work is being stopped")
