"""What every pipeline offers the worker process: a job in, progress events and a transcript out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from app.config import Settings


class Stage(StrEnum):
    """Steps of a transcription, in the order they run."""

    DOWNLOAD = "downloading"
    """Fetching `audio_url`, in the API process, before the task is queued for a worker."""
    DECODE = "decoding"
    TRANSCRIBE = "transcribing"
    ALIGN = "aligning"
    DIARIZE = "diarizing"
    ASSIGN = "assigning speakers"


NO_SPEECH = "no speech found"
"""The note of a result in which no speech was found: no segments, and `language` null unless it was given."""

ProgressCallback = Callable[[Stage, float], object]
"""Called with a stage and the fraction (0–1) of that stage's own work done; what it returns is ignored."""


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
    """Sampling temperature; None: Whisper's fallback schedule."""
    duration: float | None = None
    """Seconds of audio, as probed on upload."""
    callback_url: str | None = None
    """Where the finished task's status document is POSTed (app/outbound/webhooks.py)."""
    task: str = "transcribe"
    """`transcribe`, or `translate` (into English)."""
    hotwords: str | None = None
    """Words Whisper should expect (names, jargon), given to the decoder as a hint."""
    beam_size: int | None = None
    """Beams searched while decoding; None: BEAM_SIZE, or else 5 on CUDA and 2 on a CPU."""
    vad_onset: float | None = None
    """Speech probability at which voice activity starts; None: the engine's default."""
    vad_offset: float | None = None
    """Speech probability below which voice activity ends; None: the engine's default."""
    chunk_size: int | None = None
    """Longest stretch of speech (seconds) transcribed as one piece; None: 30."""
    suppress_numerals: bool = False
    """Spell numbers and symbols out as words (no digits, %, $ or £ tokens)."""
    return_char_alignments: bool = False
    """Time every character too (wav2vec2 alignment only)."""
    audio_url: str | None = None
    """Where the audio was downloaded from, when it was not uploaded."""
    file_name: str | None = None
    """The uploaded file's name (or the URL's last part), cleaned: shown to people, never used as a path."""
    identify_speakers: bool = False
    """Name the speakers that match `known_voices` (after diarization)."""
    known_voices: tuple[dict[str, Any], ...] = ()
    """The enrolled voices to look for (`name`, `encoder`, `embedding`), as the upload found them."""
    model: str | None = None
    """The Whisper model the request chose (one of WHISPER_MODELS); None: the worker's default."""
    multilingual: bool = False
    """Detect the language of each stretch of speech and transcribe each in its own language."""
    audio_object: str | None = None
    """The upload's key in the object storage (STORAGE_URL), under its prefix; `audio_path` is then
    a scratch copy in the UPLOAD_DIR of whichever process reads it. None: `audio_path` is the upload."""

    @property
    def stages(self) -> list[Stage]:
        """The stages a worker runs."""
        stages = [Stage.DECODE, Stage.TRANSCRIBE, Stage.ALIGN]
        if self.enable_diarization:
            stages += [Stage.DIARIZE, Stage.ASSIGN]
        return stages

    @property
    def progress_stages(self) -> list[Stage]:
        """Every stage the task's progress goes through: the download first, when there is one."""
        return [Stage.DOWNLOAD, *self.stages] if self.audio_url else self.stages

    def chosen_options(self) -> dict[str, Any]:
        """The transcription options the request gave; those left out (at their defaults) are not listed."""
        return {
            field.name: getattr(self, field.name)
            for field in fields(self)
            if field.name in TRANSCRIPTION_OPTIONS and getattr(self, field.name) != field.default
        }


TRANSCRIPTION_OPTIONS = frozenset(
    {
        "initial_prompt", "hotwords", "beam_size", "temperature", "vad_onset", "vad_offset", "chunk_size",
        "suppress_numerals", "return_char_alignments", "min_speakers", "max_speakers", "enable_diarization",
        "multilingual",
        "identify_speakers",
    }
)  # fmt: skip
"""Job fields that change the transcript; a result lists those a request set (for reproducing it)."""


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
    multilingual: bool = True
    """False for English-only models (`*.en`), which can neither translate nor transcribe other languages."""
    loaded_models: tuple[str, ...] = ()
    """Whisper models loaded in the worker now, least recently used first."""
    model_errors: tuple[tuple[str, str], ...] = ()
    """Models a task needed that could not be had (Whisper models requests chose, aligners), with why."""
    loads: tuple[str, ...] = ()
    """Every model the worker has loaded since it started, in order (`whisper:base`, `align:en`, …): a
    task that finds all it needs loaded adds none."""


class PipelineError(Exception):
    """A failure whose message tells the user what to do; shown as the task's `error`."""


class Pipeline(Protocol):
    """Built once per worker process; runs jobs one at a time."""

    def info(self) -> PipelineInfo: ...

    def finish_loading(self) -> None:
        """Load the rest of what jobs need (the diarizer, aligners); called before the worker reports ready."""
        ...

    def run(self, job: Job, progress: ProgressCallback) -> PipelineOutput: ...

    def release(self) -> None:
        """Free what the last job held (called after every job)."""
        ...

    def unload_idle(self) -> bool:
        """Unload models unused for MODEL_IDLE_SECONDS (called while the worker waits); whether any went."""
        ...


PipelineFactory = Callable[[Settings], Pipeline]
"""Builds a pipeline from `Settings`; must be importable by name, since worker processes are spawned."""
