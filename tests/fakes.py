"""FakePipeline: a stand-in for WhisperX in the fast API tests. It transcribes nothing.

It decodes the upload with the real ffmpeg path (so damaged files fail as they would), then
walks through the same stages as the real pipeline, reporting progress as it goes (and the text
of its first segment at the first transcription step, of its second at the last), and returns a
fixed transcript. Its behaviour comes from environment variables, which spawned
worker processes inherit:
  FAKE_STEP_SECONDS  pause per progress step (default 0.01)
  FAKE_STEPS         progress steps per stage (default 5)
  FAKE_MODE          "ok" (default), "fail" (a user-facing error), "crash" (the process dies),
                     "stubborn" (ignores cancellation: sleeps without reporting progress),
                     "unloadable" (fails while loading, as a missing model would)
  FAKE_STUCK_NAME    a job for a file of this name hangs in transcription without reporting progress,
                     as a long transcription batch does; other jobs run as usual
  FAKE_CRASH_NAME    a job for a file of this name makes its worker process die, as an out-of-memory
                     kill would; other jobs run as usual
  FAKE_ENGLISH_ONLY  "1": report an English-only model, as tiny.en would
  FAKE_WARNING       a warning the result carries (as the real pipeline's second-language warning)
  FAKE_NOTE          a note the result carries and the task's message ends in (as an aligner offline)
  FAKE_GATE_DIR      a job waits in transcription until a file named as its upload (file_name) exists
                     in this directory: a test decides when each task finishes
With diarization, each speaker gets a fake voiceprint of FAKE_ENCODER made the way a real encoder's
behave: the voice's own direction plus a smaller part that depends on the recording, so the same
speaker scores high but below 1 across two recordings, two speakers score near 0, and one recording
always gives the same voiceprints. Enrolling from a task and naming speakers go through the service's
real matching code.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.media import MediaError, decode
from app.pipeline.base import Job, PipelineError, PipelineInfo, PipelineOutput, ProgressCallback, Stage
from app.pipeline.model_manager import ModelManager
from app.voices.matching import identify_speakers

STEPS_PER_STAGE = 5
FAKE_TEXT = "fake transcript"
# A second, longer segment by another speaker, so subtitle exports have lines to split.
FAKE_LONG_TEXT = "this fake sentence is long enough that a subtitle has to split it over more than one line"
FAKE_ENCODER = "fake-encoder"
FAKE_MODEL = "fake"
"""The Whisper model the fake says it runs by default."""
VOICES = 2
"""Dimensions of the fake voiceprints that are the voices' own, one each (SPEAKER_00, SPEAKER_01)."""
RECORDING_DIMENSIONS = 14
RECORDING_WEIGHT = 0.4
"""Length of a voiceprint's part that depends on the recording (the voice's part is 1): one voice in two
recordings scores (1 + 0.16 cos a) / 1.16, between 0.72 and 1; two voices at most 0.14."""


class FakePipeline:
    def __init__(self, settings: Any) -> None:
        self._settings = settings
        self._step = float(os.environ.get("FAKE_STEP_SECONDS", "0.01"))
        self._mode = os.environ.get("FAKE_MODE", "ok")
        if self._mode == "unloadable":
            raise RuntimeError("The fake pipeline was told not to load.")
        # The real pipeline's model manager, over "models" that are only their names: what a worker holds,
        # and what /health reports, comes from the service's own loading and unloading rules.
        self._models: ModelManager[str] = ModelManager(
            str, settings.max_loaded_models, settings.model_idle_seconds, keep=FAKE_MODEL
        )
        with self._models.use(FAKE_MODEL):
            pass

    def info(self) -> PipelineInfo:
        english_only = os.environ.get("FAKE_ENGLISH_ONLY") == "1"
        return PipelineInfo(
            model=FAKE_MODEL, device="cpu", multilingual=not english_only, loaded_models=tuple(self._models.loaded())
        )

    def finish_loading(self) -> None:
        pass  # the fake has nothing heavy to load

    def run(self, job: Job, progress: ProgressCallback) -> PipelineOutput:
        crash_name = os.environ.get("FAKE_CRASH_NAME")
        if self._mode == "crash" or (crash_name is not None and job.file_name == crash_name):
            os._exit(1)
        if self._mode == "stubborn":
            time.sleep(3600)
        try:
            decode(job.audio_path, self._settings.ffmpeg_timeout_seconds, self._settings.max_audio_seconds)
        except MediaError as error:
            raise PipelineError(str(error)) from None
        steps = int(os.environ.get("FAKE_STEPS", STEPS_PER_STAGE))
        for stage in job.stages:
            stuck = os.environ.get("FAKE_STUCK_NAME")
            if stage is Stage.TRANSCRIBE and stuck is not None and job.file_name == stuck:
                progress(stage, 0.0)  # as the real pipeline does before its first batch
                time.sleep(3600)
            gate = os.environ.get("FAKE_GATE_DIR")
            if stage is Stage.TRANSCRIBE and gate is not None:
                progress(stage, 0.0)
                while not (Path(gate) / str(job.file_name)).exists():
                    time.sleep(0.05)
            for step in range(1, steps + 1):
                time.sleep(self._step)
                progress(stage, step / steps)
                if stage is Stage.TRANSCRIBE:  # the two segments' text, as the real pipeline reports it
                    for text in (" " + FAKE_TEXT,) * (step == 1) + (" " + FAKE_LONG_TEXT,) * (step == steps):
                        progress(stage, step / steps, text)
        if self._mode == "fail":
            raise PipelineError("The fake pipeline was told to fail.")
        with self._models.use(job.model or FAKE_MODEL):
            pass
        labels = ("SPEAKER_00", "SPEAKER_01") if job.enable_diarization else (None, None)
        segments = [_segment(FAKE_TEXT, 0.0, labels[0]), _segment(FAKE_LONG_TEXT, 3.0, labels[1])]
        result = {
            "language": job.language or "en",
            "segments": segments,
            "model": job.model or FAKE_MODEL,
            "task": job.task,
            "options": job.chosen_options(),
        }
        if job.enable_diarization:
            result["speakers"] = [{"speaker": label, "seconds": 3.0} for label in labels]
            prints = {label: voiceprint(n, job.audio_path) for n, label in enumerate(labels) if label}
            result["voiceprints"] = {"encoder": FAKE_ENCODER, "speakers": prints}
        if warning := os.environ.get("FAKE_WARNING"):
            result["warnings"] = [warning]
        note = os.environ.get("FAKE_NOTE")
        result["notes"] = [note] if note else []
        if job.identify_speakers:
            result = identify_speakers(result, job.known_voices)
        return PipelineOutput(result=result, note=note)

    def release(self) -> None:
        pass

    def unload_idle(self) -> bool:
        return bool(self._models.unload_idle())


def voiceprint(voice: int, recording: Path) -> list[float]:
    """The unit-length fake voiceprint of a voice in a recording: its own direction, and a direction drawn
    from the recording's bytes, in dimensions no voice uses."""
    seed = hashlib.sha256(recording.read_bytes() + bytes([voice])).digest()
    direction = np.random.default_rng(int.from_bytes(seed[:8], "big")).standard_normal(RECORDING_DIMENSIONS)
    vector = np.concatenate([np.eye(VOICES)[voice], RECORDING_WEIGHT * direction / np.linalg.norm(direction)])
    return [float(value) for value in vector / np.linalg.norm(vector)]


def _segment(text: str, start: float, speaker: str | None) -> dict[str, Any]:
    """Words half a second long, one a second."""
    words = [
        {"word": word, "start": start + i, "end": start + i + 0.5, "score": 0.9, "speaker": speaker}
        for i, word in enumerate(text.split())
    ]
    return {"start": start, "end": words[-1]["end"], "text": text, "speaker": speaker, "words": words}


def fake_app() -> Any:
    """The service on FakePipeline, configured from the environment, for tests that need a real
    server process: `python -m uvicorn tests.fakes:fake_app --factory`."""
    import logging

    from app.config import Settings
    from app.main import create_app

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    # As `python -m app.main` does: the service's own log lines (uvicorn sets up only its own loggers).
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    return create_app(settings, FakePipeline, FakeLiveEngine)


def celery_worker() -> None:
    """A Celery worker (TASK_BACKEND=celery) whose pool processes run FakePipeline, configured from the
    environment: `python -c "from tests.fakes import celery_worker; celery_worker()"`."""
    import app.tasks.celery_worker as worker

    worker.whisperx_pipeline = FakePipeline  # what each pool process loads, read as it starts
    worker.main()


def main() -> None:
    """`python -m tests.fakes`: the service on FakePipeline through the real run path (`app.main.serve`),
    with its connection limits, configured from the environment."""
    from app.config import Settings
    from app.main import create_app, serve

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    serve(create_app(settings, FakePipeline, FakeLiveEngine), settings)


FAKE_LIVE_WORDS = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima",
]  # fmt: skip


class FakeLiveEngine:
    """A stand-in for the live models in the fast API tests: any window louder than silence is speech,
    a turn's text is one word of FAKE_LIVE_WORDS per half second, and the voiceprint tells a low tone
    (under 400 Hz) from a high one. FAKE_LIVE_SECONDS slows every call down (a busy live worker)."""

    def __init__(self, settings: Any) -> None:
        self._delay = float(os.environ.get("FAKE_LIVE_SECONDS", "0"))

    def speech_probabilities(self, audio: Any) -> list[float]:
        time.sleep(self._delay)
        windows = audio.reshape(-1, 512)
        return [0.9 if float((window**2).mean()) > 1e-4 else 0.0 for window in windows]

    def transcribe(self, audio: Any, language: str | None, prompt: str | None, final: bool) -> str:
        time.sleep(self._delay)
        return " ".join(FAKE_LIVE_WORDS[: int(len(audio) / 8000)])

    def embed(self, audio: Any) -> list[float] | None:
        if len(audio) < 16000:
            return None
        crossings = int((audio[:-1] * audio[1:] < 0).sum())
        frequency = crossings / 2 / (len(audio) / 16000)
        return [1.0, 0.0] if frequency < 400 else [0.0, 1.0]


if __name__ == "__main__":
    main()
