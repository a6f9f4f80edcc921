"""A worker says it is ready only once the first task would find everything it needs loaded.

Shown by the worker's own report (`PipelineInfo.loads`, every model it has loaded, in order), not by
timing: the first task after the report must add nothing to it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from app.config import Settings
from app.pipeline.base import Job, Stage
from app.pipeline.diarizers import EMBEDDED_DIARIZER
from app.pipeline.whisperx_pipeline import whisperx_pipeline
from app.tasks.worker_process import WorkerProcess
from tests.conftest import Deadline
from tests.hub_server import random_wav2vec2_ctc


def test_after_ready_the_first_task_loads_no_model(tmp_path: Path, known_speech: Path) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        api_keys="unused",
        # A local aligner, so the English one is there to be loaded (offline, no other is).
        align_model=str(random_wav2vec2_ctc(tmp_path / "aligner")),
        model_cache_dir=tmp_path / "cache",
        max_concurrent_tasks=1,
    )

    async def scenario() -> tuple[tuple[str, ...], tuple[str, ...], str | None]:
        worker = WorkerProcess("worker-0", whisperx_pipeline, settings)
        await worker.start()  # returns at the worker's "ready"
        try:
            assert worker.info is not None, worker.load_error
            ready = worker.info
            stages: list[Stage] = []

            async def progress(stage: Stage, fraction: float, text: str | None) -> None:
                stages.append(stage)

            output = await worker.run(Job("first", known_speech, enable_diarization=True), progress)
            assert output.result["language"] == "en"
            assert output.result["word_timing"] == "wav2vec2-alignment"
            deadline = Deadline(30, "the worker's report after its first task")
            while worker.info is ready:  # it reports what it holds right after each task
                deadline.check()
                await asyncio.sleep(0.05)
            return ready.loads, worker.info.loads, ready.diarizer
        finally:
            await worker.stop()

    at_ready, after_first_task, diarizer = asyncio.run(scenario())
    assert diarizer == EMBEDDED_DIARIZER, "/ready names the diarizer: it is loaded before the worker says ready"
    assert set(at_ready) >= {"whisper:base", f"diarizer:{EMBEDDED_DIARIZER}", "vad:silero", "align:en"}, at_ready
    assert after_first_task == at_ready, "the first task loaded a model the worker had not loaded before ready"
