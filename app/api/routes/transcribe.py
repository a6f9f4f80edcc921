"""The seed's transcription endpoints (upload, status, result, delete) and the caller's task list.

A task belongs to the key that created it: for any other key it does not exist (404).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Query, Response, UploadFile, status

from app.api.deps import CallerDep, ManagerDep, OwnedTaskDep, SettingsDep, StoreDep, SubtitleOptionsDep, not_found
from app.api.errors import UNAUTHORIZED, problem_response
from app.api.schemas import (
    DeleteResponse,
    TaskList,
    TaskStatusResponse,
    TaskSummary,
    TranscriptionResult,
    UploadResponse,
)
from app.api.uploads import check_callback, language_code, receive_upload, refuse_over_capacity
from app.exports import MEDIA_TYPES, ExportFormat, render
from app.media import SUPPORTED_EXTENSIONS
from app.pipeline.base import Job
from app.tasks.manager import OverCapacity
from app.tasks.models import Task, TaskStatus

router = APIRouter(prefix="/api/v1/transcribe", tags=["transcription"], responses=UNAUTHORIZED)

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: problem_response("No task with this id for this key (never existed, deleted or expired)")
}


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
    summary="Upload audio or video for transcription",
    responses={
        400: problem_response("The multipart body is malformed, or a form field is over 1 MB"),
        413: problem_response("Upload over MAX_UPLOAD_MB, or audio over MAX_AUDIO_SECONDS"),
        415: problem_response("Not a supported audio or video format"),
        422: problem_response("A form field is invalid, or the file has no audio"),
        429: problem_response("The key has MAX_TASKS_PER_KEY tasks pending or processing"),
        503: problem_response("MAX_QUEUE_SIZE tasks are waiting; see Retry-After"),
    },
)
async def upload(
    response: Response,
    caller: CallerDep,
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
    try:
        # UploadAdmissionMiddleware checked before the body arrived; the queue may have filled since.
        manager.check_capacity(caller)
    except OverCapacity as error:
        raise refuse_over_capacity(error) from None

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
    try:
        task = manager.submit(job, caller)
    except OverCapacity as error:
        path.unlink(missing_ok=True)
        raise refuse_over_capacity(error) from None
    response.headers["Location"] = router.url_path_for("get_status", task_id=task_id)
    return UploadResponse(
        task_id=task.id, status=task.status, message="Task queued; poll the Location URL for progress"
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
