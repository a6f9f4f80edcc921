"""The seed's transcription endpoints: upload, status, result, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Query, Response, UploadFile, status

from app.api.deps import CallerDep, ManagerDep, SettingsDep, StoreDep, SubtitleOptionsDep
from app.api.schemas import DeleteResponse, Problem, TaskStatusResponse, TranscriptionResult, UploadResponse
from app.api.uploads import check_callback, language_code, receive_upload
from app.exports import MEDIA_TYPES, ExportFormat, render
from app.media import SUPPORTED_EXTENSIONS
from app.pipeline.base import Job
from app.tasks.models import Task, TaskStatus
from app.tasks.store import TaskStore

router = APIRouter(prefix="/api/v1/transcribe", tags=["transcription"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem, "description": "No task with this id"}}


def _task_or_404(store: TaskStore, task_id: str) -> Task:
    task = store.get(task_id)
    if task is None:
        raise HTTPException(404, f"No task with id {task_id!r}; it may have been deleted.")
    return task


@router.post(
    "/upload",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=UploadResponse,
    summary="Upload audio or video for transcription",
    responses={
        415: {"model": Problem, "description": "Not a supported audio or video format"},
        422: {"model": Problem, "description": "A form field is invalid, or the file has no audio"},
    },
)
async def upload(
    response: Response,
    _caller: CallerDep,
    settings: SettingsDep,
    manager: ManagerDep,
    file: Annotated[UploadFile, File(description=f"Audio or video: {', '.join(SUPPORTED_EXTENSIONS)}")],
    language: Annotated[str | None, Form(description="Language code such as `en`; omit to detect it")] = None,
    min_speakers: Annotated[int | None, Form(ge=1, description="Fewest speakers to find")] = None,
    max_speakers: Annotated[int | None, Form(ge=1, description="Most speakers to find")] = None,
    enable_diarization: Annotated[bool, Form(description="Label speakers")] = True,
    prompt: Annotated[
        str | None, Form(description="Text that guides the transcription: spellings of names, terms, style")
    ] = None,
    callback_url: Annotated[
        str | None, Form(description="POSTed the signed status document when the task completes or fails")
    ] = None,
) -> UploadResponse:
    code = language_code(language)
    if callback_url:
        await check_callback(callback_url, settings)
    if min_speakers is not None and max_speakers is not None and min_speakers > max_speakers:
        raise HTTPException(422, f"min_speakers ({min_speakers}) cannot be larger than max_speakers ({max_speakers})")

    path, media = await receive_upload(file, settings)
    task_id = path.name
    job = Job(
        task_id=task_id,
        audio_path=path,
        language=code,
        min_speakers=min_speakers,
        max_speakers=max_speakers,
        enable_diarization=enable_diarization,
        initial_prompt=prompt or None,
        duration=media.duration,
        callback_url=callback_url or None,
    )
    task = manager.submit(job)
    response.headers["Location"] = router.url_path_for("get_status", task_id=task_id)
    return UploadResponse(
        task_id=task.id, status=task.status, message="Task queued; poll the Location URL for progress"
    )


@router.get("/status/{task_id}", response_model=TaskStatusResponse, responses=_NOT_FOUND, summary="Task progress")
async def get_status(task_id: str, _caller: CallerDep, store: StoreDep) -> TaskStatusResponse:
    return TaskStatusResponse.from_task(_task_or_404(store, task_id))


@router.get(
    "/result/{task_id}",
    response_model=TranscriptionResult,
    response_model_exclude_none=False,
    responses={
        200: {"content": {MEDIA_TYPES[fmt]: {} for fmt in ExportFormat if fmt is not ExportFormat.JSON}},
        **_NOT_FOUND,
        409: {"model": Problem, "description": "The task has not completed"},
    },
    summary="Transcript of a completed task, as JSON or a subtitle/text file",
)
async def get_result(
    task_id: str,
    _caller: CallerDep,
    store: StoreDep,
    subtitles: SubtitleOptionsDep,
    fmt: Annotated[ExportFormat, Query(alias="format", description="json (default), srt, vtt, txt or tsv")] = (
        ExportFormat.JSON
    ),
) -> TranscriptionResult | Response:
    task = _task_or_404(store, task_id)
    if task.status is TaskStatus.FAILED:
        raise HTTPException(409, f"Task {task_id} failed, so it has no result: {task.error}")
    if task.status is not TaskStatus.COMPLETED or task.result is None:
        raise HTTPException(409, f"Task {task_id} is {task.status.value} ({task.progress:.0f}%); try again later.")
    if fmt is not ExportFormat.JSON:
        return Response(
            render(task.result, fmt, subtitles),
            media_type=f"{MEDIA_TYPES[fmt]}; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{task_id}.{fmt.value}"'},
        )
    return TranscriptionResult.model_validate(task.result)


@router.delete("/task/{task_id}", response_model=DeleteResponse, responses=_NOT_FOUND, summary="Delete a task")
async def delete_task(task_id: str, _caller: CallerDep, manager: ManagerDep) -> DeleteResponse:
    if not manager.delete(task_id):
        raise HTTPException(404, f"No task with id {task_id!r}; it may have been deleted.")
    return DeleteResponse(task_id=task_id, message="Task deleted; any running work is being stopped")
