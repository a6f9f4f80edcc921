"""ModelManager: on-demand loading, the least recently used going first, idle unloading, the default kept."""

from __future__ import annotations

import pytest

from app.pipeline.model_manager import ModelManager


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _manager(clock: Clock, loads: list[str], max_loaded: int = 2) -> ModelManager[str]:
    def load(name: str) -> str:
        loads.append(name)
        return f"model {name}"

    return ModelManager(load, max_loaded=max_loaded, idle_seconds=10, keep="base", clock=clock)


def test_loads_once_and_evicts_the_least_recently_used(clock: Clock) -> None:
    loads: list[str] = []
    manager = _manager(clock, loads)
    for name in ("base", "tiny.en", "base", "small"):
        with manager.use(name) as model:
            assert model == f"model {name}"
    assert loads == ["base", "tiny.en", "small"]  # base was used again, so tiny.en went first
    assert manager.loaded() == ["base", "small"]


def test_a_model_in_use_is_not_evicted(clock: Clock) -> None:
    loads: list[str] = []
    manager = _manager(clock, loads, max_loaded=1)
    with manager.use("base"), manager.use("tiny.en"):
        assert manager.loaded() == ["base", "tiny.en"]  # over the limit rather than pulling base away
    with manager.use("small"):
        pass
    assert manager.loaded() == ["small"]


def test_idle_models_are_unloaded_except_the_default(clock: Clock) -> None:
    manager = _manager(clock, [])
    with manager.use("base"), manager.use("tiny.en"):
        clock.now = 100
        assert manager.unload_idle() == []  # in use
    clock.now = 105
    assert manager.unload_idle() == []
    clock.now = 110
    assert manager.unload_idle() == ["tiny.en"]
    assert manager.loaded() == ["base"]
