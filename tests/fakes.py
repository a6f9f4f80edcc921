"""FakePipeline: a stand-in for WhisperX in the fast API tests. It transcribes nothing.

It decodes the upload with the real ffmpeg path (so damaged files fail as they would), then
walks through the same stages as the real pipeline, reporting progress as it goes, and
returns a fixed transcript. Its behaviour comes from environment variables, which spawned
worker processes inherit:
  FAKE_STEP_SECONDS  pause per progress step (default 0.01)
  FAKE_MODE          "ok" (default), "fail" (a user-facing error), "crash" (the process dies),
                     "stubborn" (ignores cancellation: sleeps without reporting progress),
                     "unloadable" (fails while loading, as a missing model would)
  FAKE_ENGLISH_ONLY  "1": report an English-only model, as tiny.en would
"""

from __future__ import annotations

import os
import time
from typing import Any

from app.media import MediaError, decode
from app.pipeline.base import Job, PipelineError, PipelineInfo, PipelineOutput, ProgressCallback

STEPS_PER_STAGE = 5
FAKE_TEXT = "fake transcript"
# A second, longer segment by another speaker, so subtitle exports have lines to split.
FAKE_LONG_TEXT = "this fake sentence is long enough that a subtitle has to split it over more than one line"


class FakePipeline:
    def __init__(self, settings: Any) -> None:
        self._settings = settings
        self._step = float(os.environ.get("FAKE_STEP_SECONDS", "0.01"))
        self._mode = os.environ.get("FAKE_MODE", "ok")
        if self._mode == "unloadable":
            raise RuntimeError("The fake pipeline was told not to load.")

    def info(self) -> PipelineInfo:
        english_only = os.environ.get("FAKE_ENGLISH_ONLY") == "1"
        return PipelineInfo(model="fake", device="cpu", multilingual=not english_only)

    def finish_loading(self) -> None:
        pass  # the fake has nothing heavy to load

    def run(self, job: Job, progress: ProgressCallback) -> PipelineOutput:
        if self._mode == "crash":
            os._exit(1)
        if self._mode == "stubborn":
            time.sleep(3600)
        try:
            decode(job.audio_path, self._settings.ffmpeg_timeout_seconds, self._settings.max_audio_seconds)
        except MediaError as error:
            raise PipelineError(str(error)) from None
        for stage in job.stages:
            for step in range(1, STEPS_PER_STAGE + 1):
                time.sleep(self._step)
                progress(stage, step / STEPS_PER_STAGE)
        if self._mode == "fail":
            raise PipelineError("The fake pipeline was told to fail.")
        labels = ("SPEAKER_00", "SPEAKER_01") if job.enable_diarization else (None, None)
        segments = [_segment(FAKE_TEXT, 0.0, labels[0]), _segment(FAKE_LONG_TEXT, 3.0, labels[1])]
        result = {
            "language": job.language or "en",
            "segments": segments,
            "model": "fake",
            "task": job.task,
            "options": job.chosen_options(),
        }
        return PipelineOutput(result=result, note=None)

    def release(self) -> None:
        pass


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
    from app.config import Settings
    from app.main import create_app

    return create_app(Settings(_env_file=None), FakePipeline)  # type: ignore[call-arg]


def main() -> None:
    """`python -m tests.fakes`: the service on FakePipeline through the real run path (`app.main.serve`),
    with its connection limits, configured from the environment."""
    from app.config import Settings
    from app.main import create_app, serve

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    serve(create_app(settings, FakePipeline), settings)


if __name__ == "__main__":
    main()
