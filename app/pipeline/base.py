"""What every pipeline offers the worker process: a job in, progress events and a transcript out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol


class Stage(StrEnum):
    """Steps of a transcription, in the order they run."""

    DECODE = "decoding"
    TRANSCRIBE = "transcribing"
    ALIGN = "aligning"
    DIARIZE = "diarizing"
    ASSIGN = "assigning speakers"


ProgressCallback = Callable[[Stage, float], None]
"""Called with a stage and the fraction (0–1) of that stage's own work done."""


@dataclass(frozen=True)
class Job:
    """One transcription request as the worker sees it."""

    task_id: str
    audio_path: Path
    language: str | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None
    enable_diarization: bool = True
    initial_prompt: str | None = None
    """Text Whisper reads as preceding the audio: spellings, names, style."""
    temperature: float | None = None
    """Sampling temperature when words are timed by Whisper; None: Whisper's fallback schedule."""
    duration: float | None = None
    """Seconds of audio, as probed on upload."""
    callback_url: str | None = None
    """Where the finished task's status document is POSTed (app/webhooks.py)."""

    @property
    def stages(self) -> list[Stage]:
        stages = [Stage.DECODE, Stage.TRANSCRIBE, Stage.ALIGN]
        if self.enable_diarization:
            stages += [Stage.DIARIZE, Stage.ASSIGN]
        return stages


@dataclass
class PipelineOutput:
    """A transcript in the API's result shape, and a note for the task's message."""

    result: dict[str, Any]
    note: str | None = None


@dataclass
class PipelineInfo:
    """What a loaded pipeline reports for `/health`."""

    model: str
    device: str
    diarizer: str | None = None


class PipelineError(Exception):
    """A failure whose message tells the user what to do; shown as the task's `error`."""


class Pipeline(Protocol):
    """Built once per worker process; runs jobs one at a time."""

    def info(self) -> PipelineInfo: ...

    def finish_loading(self) -> None:
        """Load what jobs need but readiness need not wait for; called once the worker reports ready."""
        ...

    def run(self, job: Job, progress: ProgressCallback) -> PipelineOutput: ...

    def release(self) -> None:
        """Free what the last job held (called after every job)."""
        ...


PipelineFactory = Callable[[Any], Pipeline]
"""Builds a pipeline from `Settings`; must be importable by name, since worker processes are spawned."""
