"""The seed's transcription endpoints (upload, status, result, delete) and the caller's task list.

A task belongs to the key that created it: for any other key it does not exist (404).
"""

from __future__ import annotations

import functools
import json
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Query, Response, status

from app.api.deps import (
    CallerDep,
    ManagerDep,
    OwnedTaskDep,
    SettingsDep,
    StorageDep,
    StoreDep,
    SubtitleOptionsDep,
    VoiceStoreDep,
    not_found,
)
from app.api.errors import UNAUTHORIZED, problem_response
from app.api.filenames import attachment, display_name, name_from_url
from app.api.forms import UploadForm
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
from app.api.upload_body import UploadDirRoute
from app.api.uploads import (
    check_audio_url,
    check_callback,
    check_can_translate,
    check_multilingual,
    choose_model,
    language_code,
    new_upload_path,
    receive_upload,
    refuse_over_capacity,
)
from app.formats.exports import MEDIA_TYPES, ExportFormat, render
from app.outbound.downloads import download_audio
from app.pipeline.base import Job
from app.tasks.limits import OverCapacity
from app.tasks.models import TaskStatus

DEFAULT_VAD_ONSET = 0.5
"""Both engines' (whisperx's and faster-whisper's Silero VAD) default speech threshold."""

router = APIRouter(
    prefix="/api/v1/transcribe", tags=["transcription"], responses=UNAUTHORIZED, route_class=UploadDirRoute
)

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


@router.post(
    "/upload",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=UploadResponse,
    summary="Upload audio or video (or give its URL) for transcription",
    responses={
        400: problem_response("Malformed multipart body, or more than one file, 64 fields or 64 KB a field"),
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
    storage: StorageDep,
    form: Annotated[UploadForm, Form(media_type="multipart/form-data")],
) -> UploadResponse:
    code, file = language_code(form.language), form.file
    identify, wanted_names = _voice_names(form.identify_speakers)
    if identify and not form.enable_diarization:
        raise HTTPException(422, "identify_speakers: speakers are named after diarization; keep enable_diarization on")
    known_voices = await owned_voices(voices, caller, wanted_names) if identify else ()
    chosen_model = choose_model(form.model, settings)
    if (file is None) == (form.audio_url is None):
        raise HTTPException(
            422,
            "file: give either file (the audio itself) or audio_url (where to download it), not both"
            if file is not None
            else "file: Field required (upload the audio as file, or give audio_url)",
        )
    if form.audio_url is not None:
        await check_audio_url(form.audio_url, settings)
    if form.callback_url:
        await check_callback(form.callback_url, settings)
    if form.min_speakers is not None and form.max_speakers is not None and form.min_speakers > form.max_speakers:
        raise HTTPException(
            422, f"min_speakers ({form.min_speakers}) cannot be larger than max_speakers ({form.max_speakers})"
        )
    onset = f"{form.vad_onset:g}" if form.vad_onset is not None else f"{DEFAULT_VAD_ONSET:g}, the default"
    if form.vad_offset is not None and form.vad_offset > (form.vad_onset or DEFAULT_VAD_ONSET):
        raise HTTPException(422, f"vad_offset ({form.vad_offset:g}) cannot be larger than vad_onset ({onset})")
    if form.prompt and form.initial_prompt and form.prompt != form.initial_prompt:
        raise HTTPException(422, "prompt: give the prompt once, as initial_prompt (prompt is its earlier name)")
    if form.task is TranscriptionTask.TRANSLATE:
        check_can_translate(manager, chosen_model)
    if form.multilingual:
        check_multilingual(manager, code, chosen_model)
    try:
        # UploadAdmissionMiddleware checked before the body arrived; the queue may have filled since.
        await manager.check_capacity(caller)
    except OverCapacity as error:
        raise refuse_over_capacity(error) from None

    options: dict[str, Any] = {
        **form.model_dump(exclude={"file", "prompt", "audio_url", "identify_speakers"}),
        "language": code,
        "initial_prompt": form.initial_prompt or form.prompt or None,
        "callback_url": form.callback_url or None,
        "task": form.task.value,
        "hotwords": form.hotwords or None,
        "identify_speakers": identify,
        "known_voices": known_voices,
        "model": chosen_model,
    }
    prepare = None
    if file is not None:
        path, media, audio_object = await receive_upload(file, settings)
        name = display_name(file.filename)
        job = Job(
            task_id=path.name, audio_path=path, audio_object=audio_object, duration=media.duration, file_name=name,
            **options,
        )  # fmt: skip
    else:
        path = new_upload_path(settings)
        name = name_from_url(form.audio_url) if form.audio_url else None
        job = Job(task_id=path.name, audio_path=path, audio_url=form.audio_url, file_name=name, **options)
        prepare = functools.partial(download_audio, job, settings, storage, storage.upload_key(caller, path.name))
    try:
        created = await manager.submit(job, caller, prepare)
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
    tasks, total = await store.page(caller, status, limit, offset)
    return TaskList(tasks=[TaskSummary.from_task(task) for task in tasks], total=total, limit=limit, offset=offset)


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
            headers={"Content-Disposition": attachment(task.job.file_name, task.id, fmt.value)},
        )
    return TranscriptionResult.model_validate(task.result)


@router.delete("/task/{task_id}", response_model=DeleteResponse, responses=_NOT_FOUND, summary="Delete a task")
async def delete_task(task_id: str, caller: CallerDep, manager: ManagerDep) -> DeleteResponse:
    if not await manager.delete(task_id, caller):
        raise not_found(task_id)
    return DeleteResponse(task_id=task_id, message="Task deleted; any running work is being stopped")
