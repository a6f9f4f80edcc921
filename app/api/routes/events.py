"""GET /api/v1/transcribe/events/{task_id}: a task's progress as Server-Sent Events.

sse-starlette does the protocol: framing, keep-alive pings, and closing streams when the
server shuts down. The stream starts with the task's current state, so a late client is
never behind, and ends after the terminal event (`completed`, `failed` or `deleted`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from app.api.deps import ManagerDep, OwnedTaskDep, StoreDep
from app.api.errors import UNAUTHORIZED, problem_response
from app.api.schemas import TaskEvent, remarks
from app.tasks.models import Task, TaskStatus
from app.tasks.progress import StageCosts

router = APIRouter(prefix="/api/v1/transcribe", tags=["transcription"], responses=UNAUTHORIZED)

# Seconds between keep-alive comments, so proxies do not close a quiet stream.
PING_SECONDS = 15
ESTIMATE_REFRESH_SECONDS = 1.0


def _event(task: Task, eta_seconds: float | None) -> ServerSentEvent:
    data = TaskEvent(
        task_id=task.id,
        status=task.status,
        stage=task.stage.value if task.stage else None,
        progress=task.progress,
        message=task.message,
        eta_seconds=eta_seconds,
        error=task.error,
        **remarks(task),
    )
    return ServerSentEvent(data=data.model_dump_json(), event=task.status.value)


def _deleted(task_id: str) -> ServerSentEvent:
    data = TaskEvent(
        task_id=task_id, status="deleted", stage=None, progress=0.0, message="Task deleted", eta_seconds=None,
        error=None,
    )  # fmt: skip
    return ServerSentEvent(data=data.model_dump_json(), event="deleted")


async def _stream(
    task_id: str, changes: AsyncIterator[Task | None], costs: StageCosts
) -> AsyncIterator[ServerSentEvent]:
    """Each change; and while a task runs with no change for ESTIMATE_REFRESH_SECONDS, its state again
    with a fresh `eta_seconds`: a stage slower than predicted moves the end later, which a client
    counting the last estimate down cannot know (a long transcription batch reports nothing)."""
    next_change = asyncio.ensure_future(anext(changes))
    try:
        task: Task | None = None
        while True:
            running = task is not None and task.status is TaskStatus.PROCESSING
            done, _ = await asyncio.wait({next_change}, timeout=ESTIMATE_REFRESH_SECONDS if running else None)
            if not done and task is not None:
                if (eta := costs.eta_seconds(task)) is not None:  # nothing new to say without an estimate
                    yield _event(task, eta)
                continue
            try:
                task = next_change.result()
            except StopAsyncIteration:
                return
            yield _event(task, costs.eta_seconds(task)) if task is not None else _deleted(task_id)
            next_change = asyncio.ensure_future(anext(changes))
    finally:
        next_change.cancel()


@router.get(
    "/events/{task_id}",
    response_class=EventSourceResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "Events named after the status; data: TaskEvent"},
        404: problem_response("No task with this id for this key (never existed, deleted or expired)"),
        429: problem_response("The key has MAX_STREAMS_PER_KEY streams open"),
    },
    summary="Live progress as Server-Sent Events",
)
async def task_events(
    task: OwnedTaskDep, manager: ManagerDep, store: StoreDep, request: Request
) -> EventSourceResponse:
    changes = manager.events.follow(task.id, store.get)
    return EventSourceResponse(_stream(task.id, changes, request.app.state.stage_costs), ping=PING_SECONDS)
