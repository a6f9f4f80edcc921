"""A model that could not be fetched is not asked for again for a while, by any worker on the cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.models.hub import ModelUnavailable
from app.models.misses import RETRY_SECONDS, Misses


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_failed_fetch_stands_for_every_worker_until_it_is_time_to_try_again(tmp_path: Path) -> None:
    clock = Clock()
    tries: list[str] = []

    def unreachable() -> Path:
        tries.append("hub")
        raise ModelUnavailable("the model hub did not answer")

    worker, other_worker = Misses(tmp_path, clock), Misses(tmp_path, clock)
    for misses in (worker, worker, other_worker):
        with pytest.raises(ModelUnavailable, match="did not answer"):
            misses.fetch("align:en", unreachable)
    assert tries == ["hub"], "asked once; the other calls were answered by the remembered failure"
    assert worker.fetch("align:de", lambda: tmp_path) == tmp_path, "another model is its own question"

    clock.now += RETRY_SECONDS + 1
    assert other_worker.fetch("align:en", lambda: tmp_path / "fetched") == tmp_path / "fetched"


def test_a_cache_that_cannot_be_written_still_remembers_in_the_process(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    misses = Misses(blocked / "unavailable", Clock())
    tries = []

    def unreachable() -> Path:
        tries.append(1)
        raise ModelUnavailable("no network")

    for _ in range(2):
        with pytest.raises(ModelUnavailable):
            misses.fetch("align:en", unreachable)
    assert tries == [1]
