"""The seed's transcription endpoints (upload, status, result, delete) and the caller's task list.

A task belongs to the key that created it: for any other key it does not exist (404).
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, File, Form, HTTPException, Query, Response, UploadFile, status
from whisperx.utils import LANGUAGES, TO_LANGUAGE_CODE

from app.api.deps import CallerDep, ManagerDep, SettingsDep, StoreDep
from app.api.errors import UNAUTHORIZED, problem_response
from app.api.schemas import (
    DeleteResponse,
    TaskList,
    TaskStatusResponse,
    TaskSummary,
    TranscriptionResult,
    UploadResponse,
)
from app.media import SUPPORTED_EXTENSIONS, MediaError, UnsupportedMediaError, probe
from app.pipeline.base import Job
from app.tasks.manager import RETRY_AFTER_SECONDS, OverCapacity
from app.tasks.models import Task, TaskStatus
from app.tasks.store import TaskStore

router = APIRouter(prefix="/api/v1/transcribe", tags=["transcription"], responses=UNAUTHORIZED)

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: problem_response("No task with this id for this key (never existed, deleted or expired)")
}


def _language_code(language: str | None) -> str | None:
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


def _save(source: BinaryIO, target: Path) -> int:
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as out:
        shutil.copyfileobj(source, out, 1024 * 1024)
        return out.tell()


def _not_found(task_id: str) -> HTTPException:
    return HTTPException(
        404, f"No task with id {task_id!r} for this API key; it may have been deleted or have expired (TASK_TTL_HOURS)."
    )


def _task_or_404(store: TaskStore, task_id: str, caller: str) -> Task:
    task = store.get(task_id)
    # Another key's task answers exactly like a missing one: ids of others' tasks leak nothing.
    if task is None or task.owner != caller:
        raise _not_found(task_id)
    return task


def _refuse(error: OverCapacity) -> HTTPException:
    return HTTPException(error.status, error.detail, {"Retry-After": str(RETRY_AFTER_SECONDS)})


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
) -> UploadResponse:
    code = _language_code(language)
    if min_speakers is not None and max_speakers is not None and min_speakers > max_speakers:
        raise HTTPException(422, f"min_speakers ({min_speakers}) cannot be larger than max_speakers ({max_speakers})")
    try:
        # UploadAdmissionMiddleware checked before the body arrived; the queue may have filled since.
        manager.check_capacity(caller)
    except OverCapacity as error:
        raise _refuse(error) from None

    task_id = str(uuid.uuid4())
    # A server-chosen name: the client's file name never touches the file system.
    path = settings.upload_dir / task_id
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
    except UnsupportedMediaError as error:
        path.unlink(missing_ok=True)
        raise HTTPException(415, str(error)) from None
    except MediaError as error:
        path.unlink(missing_ok=True)
        raise HTTPException(422, str(error)) from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise

    job = Job(
        task_id=task_id,
        audio_path=path,
        language=code,
        min_speakers=min_speakers,
        max_speakers=max_speakers,
        enable_diarization=enable_diarization,
    )
    try:
        task = manager.submit(job, caller)
    except OverCapacity as error:
        path.unlink(missing_ok=True)
        raise _refuse(error) from None
    response.headers["Location"] = router.url_path_for("get_status", task_id=task_id)
    return UploadResponse(
        task_id=task.id, status=task.status, message="Task queued; poll the Location URL for progress"
    )


@router.get("/status/{task_id}", response_model=TaskStatusResponse, responses=_NOT_FOUND, summary="Task progress")
async def get_status(task_id: str, caller: CallerDep, store: StoreDep) -> TaskStatusResponse:
    task = _task_or_404(store, task_id, caller)
    result = TranscriptionResult.model_validate(task.result) if task.result else None
    return TaskStatusResponse(**_summary(task), result=result)


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
    responses={**_NOT_FOUND, 409: problem_response("The task has not completed")},
    summary="Transcript of a completed task",
)
async def get_result(task_id: str, caller: CallerDep, store: StoreDep) -> TranscriptionResult:
    task = _task_or_404(store, task_id, caller)
    if task.status is TaskStatus.FAILED:
        raise HTTPException(409, f"Task {task_id} failed, so it has no result: {task.error}")
    if task.status is not TaskStatus.COMPLETED or task.result is None:
        raise HTTPException(409, f"Task {task_id} is {task.status.value} ({task.progress:.0f}%); try again later.")
    return TranscriptionResult.model_validate(task.result)


@router.delete("/task/{task_id}", response_model=DeleteResponse, responses=_NOT_FOUND, summary="Delete a task")
async def delete_task(task_id: str, caller: CallerDep, manager: ManagerDep) -> DeleteResponse:
    if not manager.delete(task_id, caller):
        raise _not_found(task_id)
    return DeleteResponse(task_id=task_id, message="Task deleted; any running work is being stopped")
