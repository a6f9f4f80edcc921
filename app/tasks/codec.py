"""A task as a flat record of JSON-friendly values, for stores that keep it outside the process.

The job is written field by field from `dataclasses.asdict`, so a field added to `Job`
is stored and read back without changes here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from app.pipeline.base import Job, Stage
from app.tasks.models import Task, TaskStatus

FIELDS = (
    "id", "owner", "status", "progress", "stage", "message",
    "created_at", "started_at", "completed_at", "error", "result", "job",
)  # fmt: skip


def timestamp(value: datetime | None) -> str | None:
    # Fixed width, so text order is time order.
    return value.isoformat(timespec="microseconds") if value else None


def to_record(task: Task) -> dict[str, Any]:
    job = {**asdict(task.job), "audio_path": str(task.job.audio_path)}
    return {
        "id": task.id,
        "owner": task.owner,
        "status": task.status.value,
        "progress": float(task.progress),  # numpy floats too
        "stage": task.stage.value if task.stage else None,
        "message": task.message,
        "created_at": timestamp(task.created_at),
        "started_at": timestamp(task.started_at),
        "completed_at": timestamp(task.completed_at),
        "error": task.error,
        "result": json.dumps(task.result) if task.result is not None else None,
        "job": json.dumps(job),
    }


def from_record(record: Mapping[Any, Any]) -> Task:
    job = json.loads(record["job"])
    job["audio_path"] = Path(job["audio_path"])

    def when(name: str) -> datetime | None:
        value = record.get(name)
        return datetime.fromisoformat(value) if value else None

    created_at = when("created_at")
    if created_at is None:
        raise ValueError(f"task {record.get('id')!r} has no created_at")
    return Task(
        job=Job(**job),
        owner=record["owner"],
        status=TaskStatus(record["status"]),
        progress=float(record["progress"]),
        stage=Stage(record["stage"]) if record.get("stage") else None,
        message=record["message"],
        created_at=created_at,
        started_at=when("started_at"),
        completed_at=when("completed_at"),
        error=record.get("error"),
        result=json.loads(record["result"]) if record.get("result") is not None else None,
    )
