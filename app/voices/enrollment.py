"""Embedding enrolment samples away from the API's event loop, in a process of its own.

A separate process keeps torch and the encoder out of the API process (its memory and start-up)
and lets a sample be embedded while requests go on; it loads the encoder once, on the first sample.
It embeds one sample at a time, the keys taking turns: a key's next sample waits behind every
other key's first, so one key's samples (at most MAX_ENROLMENTS_PER_KEY of them, each at most
MAX_SAMPLE_SECONDS long) hold up another key's by one sample at most.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

from app.config import Settings
from app.ops.orphans import end_with_parent


def _embed_sample(path: Path, ffmpeg_timeout: float, max_seconds: float) -> list[float]:
    from app.pipeline.voiceprints import embed_sample  # in the enrolment process only

    return embed_sample(path, ffmpeg_timeout, max_seconds)


class FairTurns:
    """One holder at a time; of those waiting, the turn goes to the key served longest ago (or never),
    and within a key to its oldest request."""

    def __init__(self) -> None:
        self._busy = False
        self._waiting: list[tuple[str, int, asyncio.Future[None]]] = []
        self._last_served: dict[str, int] = {}
        self._ticks = itertools.count()

    @asynccontextmanager
    async def turn(self, owner: str) -> AsyncIterator[None]:
        if self._busy:
            waiter = (owner, next(self._ticks), asyncio.get_running_loop().create_future())
            self._waiting.append(waiter)
            try:
                await waiter[2]
            except asyncio.CancelledError:
                if waiter in self._waiting:
                    self._waiting.remove(waiter)
                elif not waiter[2].cancelled():  # handed the turn just as it was cancelled: pass it on
                    self._hand_on()
                raise
        self._busy = True
        self._last_served[owner] = next(self._ticks)
        try:
            yield
        finally:
            self._hand_on()

    def _hand_on(self) -> None:
        if not self._waiting:
            self._busy = False
            return
        chosen = min(self._waiting, key=lambda waiter: (self._last_served.get(waiter[0], -1), waiter[1]))
        self._waiting.remove(chosen)
        chosen[2].set_result(None)


class SampleEmbedder:
    """One enrolment process, started on the first sample and kept until the app stops."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pool: ProcessPoolExecutor | None = None
        self._turns = FairTurns()

    async def embed(self, path: Path, owner: str) -> list[float]:
        """The sample's unit-length embedding, in the owner's turn; SampleError (app.voices.errors) when it has
        too little speech."""
        if self._pool is None:
            # spawn, as the worker processes are: a forked copy of a running event loop is unsafe.
            # It ends with the API process, even one killed outright (it holds the encoder's memory).
            self._pool = ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("spawn"), initializer=end_with_parent
            )
        settings = self._settings
        loop = asyncio.get_running_loop()
        async with self._turns.turn(owner):
            return await loop.run_in_executor(
                # At most MAX_SAMPLE_SECONDS decoded, even of a file whose header hid its length.
                self._pool,
                _embed_sample,
                path,
                settings.ffmpeg_timeout_seconds,
                settings.max_sample_seconds,
            )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
