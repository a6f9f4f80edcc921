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
    language: str | None = Field(None, description="The language spoken in this segment; with `multilingual` only")


class SpeakerTime(BaseModel):
    speaker: str = Field(description="The speaker's name, as segments and words carry it")
    seconds: float = Field(description="Total speaking time of this speaker")
    label: str | None = Field(None, description="The diarizer's label (`SPEAKER_00`, …) when the speaker was named")
    match: str | None = Field(
        None, description="With `identify_speakers`: the closest enrolled voice, named or not (see `score`)"
    )
    score: float | None = Field(None, description="Cosine similarity to `match`; the name is given above a threshold")


class TranscriptionResult(BaseModel):
    language: str | None = Field(
        description="The language spoken (given, or detected); with `translate`, the text is English; null when "
        "no language was given and no speech was found (the notes then say `no speech found`)"
    )
    segments: list[Segment]
    task: TranscriptionTask = Field(TranscriptionTask.TRANSCRIBE, description="`transcribe` or `translate`")
    model: str | None = Field(None, description="Whisper model that transcribed the audio")
    word_timing: str | None = Field(
        None,
        description="How words were timed: `wav2vec2-alignment` or `whisper-word-timestamps`; `mixed` when, "
        "with `multilingual`, some languages had an alignment model and others not",
    )
    warnings: list[str] | None = Field(
        None,
        description="What may be wrong with the transcript, such as audio that seems to hold more than one "
        "language (send `multilingual=true`); absent when nothing was noticed",
    )
    diarizer: str | None = Field(None, description="Model that labelled the speakers; null when none ran")
    speakers: list[SpeakerTime] | None = Field(None, description="Each speaker label's total speaking time")
    notes: list[str] = Field(
        default_factory=list,
        description="What did not run as configured, and what took its place (a diarizer or aligner that "
        "could not be loaded)",
    )
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
    file_name: str | None = Field(
        None, description="The uploaded file's name (or the audio_url's last part), for display; null if none was given"
    )
    duration: float | None = Field(None, description="Seconds of audio; null until known (audio_url: once downloaded)")
    warnings: list[str] = Field(
        default_factory=list,
        description="The result's `warnings` (what may be wrong with the transcript), so lists and events show "
        "them; empty until the task completes",
    )
    notes: list[str] = Field(
        default_factory=list, description="The result's `notes` (what ran other than configured); empty until completed"
    )

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
            file_name=task.job.file_name,
            duration=task.job.duration,
            **remarks(task),
        )


class TaskStatusResponse(TaskSummary):
    result: TranscriptionResult | None

    @classmethod
    def from_task(cls, task: Task) -> TaskStatusResponse:
        result = TranscriptionResult.model_validate(task.result) if task.result else None
        return TaskStatusResponse(**dict(TaskSummary.from_task(task)), result=result)


def remarks(task: Task) -> dict[str, list[str]]:
    """The warnings and notes of a task's result, for the documents that do not carry the result."""
    result = task.result or {}
    return {"warnings": list(result.get("warnings") or []), "notes": list(result.get("notes") or [])}


class TaskEvent(BaseModel):
    """The data of one Server-Sent Event on /api/v1/transcribe/events/{task_id}."""

    task_id: str
    status: TaskStatus | Literal["deleted"]
    stage: str | None = Field(description="The stage running now: `downloading` while pending, then the pipeline's")
    progress: float
    message: str
    eta_seconds: float | None = Field(description="Estimated seconds until completion; null until it can be told")
    error: str | None
    warnings: list[str] = Field(default_factory=list, description="As in the task's status: set once completed")
    notes: list[str] = Field(default_factory=list, description="As in the task's status: set once completed")


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


class ModelsHealth(BaseModel):
    default: str = Field(description="The Whisper model a request without `model` gets")
    allowed: list[str] = Field(description="The models a request may choose (the default, then WHISPER_MODELS)")
    loaded: dict[str, list[str]] = Field(
        description="Each worker's loaded Whisper models, least recently used first (MAX_LOADED_MODELS at most)"
    )
    errors: dict[str, str] = Field(
        default_factory=dict, description="Models requests chose that could not be loaded, with why and what to do"
    )


class HealthResponse(BaseModel):
    status: str = Field(description="`ok`, `loading` while models load, `degraded` when they failed to load")
    device: str | None = Field(description="`cpu` or `cuda`; null until the models are loaded")
    model: str | None
    diarizer: str | None = Field(None, description="Diarizer that labels speakers; null when none could be loaded")
    model_loaded: bool
    model_error: str | None = None
    queue: QueueCounts
    models: ModelsHealth
    gpu: list[GpuMemory] | None = None
    max_upload_mb: float = Field(
        description="Largest upload accepted (MAX_UPLOAD_MB); a larger one is refused with 413 before it is "
        "read, so clients check the size first"
    )


class OpenAIModel(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(0, description="Unknown here; always 0")
    owned_by: str
    loaded: bool = Field(description="Whether a worker has it loaded now (an extension to OpenAI's shape)")


class OpenAIModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIModel]


class LiveResponse(BaseModel):
    alive: bool = Field(description="Always true: an answer at all is the news")


class ReadyResponse(BaseModel):
    ready: bool = Field(description="True only when every worker has the configured models loaded")
    detail: str
    model: str | None
    device: str | None
    diarizer: str | None


class WebhookSecretResponse(BaseModel):
    key_id: str = Field(description="The id of the key that asked: what its tasks belong to")
    secret: str = Field(description="Standard Webhooks secret (`whsec_` + base64) that signs this key's callbacks")


class Problem(BaseModel):
    """Every error response (RFC 9457 problem details)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str


class VoiceResponse(BaseModel):
    """An enrolled voice: its name and how many samples made it; the embedding itself is never shown."""

    id: str
    name: str
    samples: int = Field(description="Samples averaged into the voice's embedding")
    encoder: str = Field(description="Speaker encoder of the embedding; it matches speakers embedded by the same one")
    created_at: datetime
    updated_at: datetime


class VoiceList(BaseModel):
    speakers: list[VoiceResponse]


class VoicesDeleted(BaseModel):
    deleted: int = Field(description="How many voices were deleted")
