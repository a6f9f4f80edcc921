"""Embedding enrolment samples away from the API's event loop, in a process of its own.

A separate process keeps torch and the encoder out of the API process (its memory and start-up)
and lets a sample be embedded while requests go on; it loads the encoder once, on the first sample.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from app.config import Settings
from app.ops.orphans import end_with_parent


def _embed_sample(path: Path, ffmpeg_timeout: float, max_seconds: float) -> list[float]:
    from app.pipeline.voiceprints import embed_sample  # in the enrolment process only

    return embed_sample(path, ffmpeg_timeout, max_seconds)


class SampleEmbedder:
    """One enrolment process, started on the first sample and kept until the app stops."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pool: ProcessPoolExecutor | None = None

    async def embed(self, path: Path) -> list[float]:
        """The sample's unit-length embedding; SampleError (app.voices.errors) when it has too little speech."""
        if self._pool is None:
            # spawn, as the worker processes are: a forked copy of a running event loop is unsafe.
            # It ends with the API process, even one killed outright (it holds the encoder's memory).
            self._pool = ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("spawn"), initializer=end_with_parent
            )
        settings = self._settings
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, _embed_sample, path, settings.ffmpeg_timeout_seconds, settings.max_audio_seconds
        )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
