"""The JSON shapes of the API, as the seed specification defines them (extras are additive)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.tasks.models import Task, TaskStatus


class TranscriptionTask(StrEnum):
    TRANSCRIBE = "transcribe"
    TRANSLATE = "translate"


class Word(BaseModel):
    word: str
    start: float | None = Field(description="Seconds; null when the word could not be timed")
    end: float | None
    score: float | None = Field(
        None,
        description="0–1: the wav2vec2 alignment score, or Whisper's probability for the word; null when "
        "alignment gave none (the word could not be timed, or its times were interpolated)",
    )
    timed: bool = Field(True, description="False when the word could not be timed: `start` and `end` are null")
    speaker: str | None = None


class Char(BaseModel):
    char: str
    start: float | None = None
    end: float | None = None
    score: float | None = None


class Segment(BaseModel):
    start: float
    end: float
    text: str
    speaker: str | None = None
    words: list[Word]
    chars: list[Char] | None = Field(
        None, description="Each character's times, with `return_char_alignments` and wav2vec2 alignment only"
    )


class SpeakerTime(BaseModel):
    speaker: str
    seconds: float = Field(description="Total speaking time of this speaker")


class TranscriptionResult(BaseModel):
    language: str = Field(description="The language spoken (given, or detected); with `translate`, the text is English")
    segments: list[Segment]
    task: TranscriptionTask = Field(TranscriptionTask.TRANSCRIBE, description="`transcribe` or `translate`")
    model: str | None = Field(None, description="Whisper model that transcribed the audio")
    word_timing: str | None = Field(
        None, description="How words were timed: `wav2vec2-alignment` or `whisper-word-timestamps`"
    )
    diarizer: str | None = Field(None, description="Model that labelled the speakers; null when none ran")
    speakers: list[SpeakerTime] | None = Field(None, description="Each speaker label's total speaking time")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="The options the request gave (initial_prompt, beam_size, …; those left out are at their "
        "defaults): with `model`, `language`, `task`, `word_timing` and `diarizer`, what it takes to "
        "reproduce this transcript",
    )


class UploadResponse(BaseModel):
    task_id: str
    status: TaskStatus
    message: str


class TaskSummary(BaseModel):
    task_id: str
    status: TaskStatus
    progress: float = Field(description="Overall percent, 0–100; never goes backwards")
    message: str = Field(description="What the task is doing now, or how it ended")
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    error: str | None = Field(description="Why the task failed and what to do about it; null unless failed")

    @classmethod
    def from_task(cls, task: Task) -> TaskSummary:
        return TaskSummary(
            task_id=task.id,
            status=task.status,
            progress=task.progress,
            message=task.message,
            created_at=task.created_at,
            started_at=task.started_at,
            completed_at=task.completed_at,
            error=task.error,
        )


class TaskStatusResponse(TaskSummary):
    result: TranscriptionResult | None

    @classmethod
    def from_task(cls, task: Task) -> TaskStatusResponse:
        result = TranscriptionResult.model_validate(task.result) if task.result else None
        return TaskStatusResponse(**dict(TaskSummary.from_task(task)), result=result)


class TaskEvent(BaseModel):
    """The data of one Server-Sent Event on /api/v1/transcribe/events/{task_id}."""

    task_id: str
    status: TaskStatus | Literal["deleted"]
    stage: str | None = Field(description="The stage running now: `downloading` while pending, then the pipeline's")
    progress: float
    message: str
    eta_seconds: float | None = Field(description="Estimated seconds until completion; null until it can be told")
    error: str | None


class TaskList(BaseModel):
    tasks: list[TaskSummary] = Field(description="The caller's tasks, newest first, without their results")
    total: int = Field(description="How many tasks match, over all pages")
    limit: int
    offset: int


class DeleteResponse(BaseModel):
    task_id: str
    message: str


class QueueCounts(BaseModel):
    pending: int
    processing: int


class GpuMemory(BaseModel):
    name: str
    memory_total_mb: int
    memory_used_mb: int


class HealthResponse(BaseModel):
    status: str = Field(description="`ok`, `loading` while models load, `degraded` when they failed to load")
    device: str | None = Field(description="`cpu` or `cuda`; null until the models are loaded")
    model: str | None
    diarizer: str | None = Field(None, description="Diarizer that labels speakers; null when none could be loaded")
    model_loaded: bool
    model_error: str | None = None
    queue: QueueCounts
    gpu: list[GpuMemory] | None = None


class ReadyResponse(BaseModel):
    ready: bool = Field(description="True only when every worker has the configured models loaded")
    detail: str
    model: str | None
    device: str | None
    diarizer: str | None


class Problem(BaseModel):
    """Every error response (RFC 9457 problem details)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
