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


def test_a_model_whose_files_cannot_be_had_evicts_nothing(clock: Clock) -> None:
    loads: list[str] = []

    def fetch(name: str) -> None:
        if name == "large-v3":
            raise OSError("the hub did not answer")  # uncached, offline, or the download failing

    def load(name: str) -> str:
        loads.append(name)
        return f"model {name}"

    manager = ModelManager(load, max_loaded=1, idle_seconds=10, keep="base", clock=clock, fetch=fetch)
    with manager.use("base"):
        pass
    with pytest.raises(OSError, match="did not answer"), manager.use("large-v3"):
        pass
    assert manager.loaded() == ["base"], "the default stays loaded"
    assert str(manager.failures["large-v3"]) == "the hub did not answer"  # what the worker reports
    with manager.use("base"):
        pass
    assert loads == ["base"], "the next task finds the default loaded: no reload"


def test_the_default_goes_last_when_room_is_made(clock: Clock) -> None:
    loads: list[str] = []
    manager = _manager(clock, loads)  # room for two, the default is base
    for name in ("tiny.en", "base", "small"):  # tiny.en makes room for small
        with manager.use(name):
            pass
    with manager.use("small"):
        pass
    with manager.use("medium"):  # base is now the least recently used, yet small goes
        pass
    assert manager.loaded() == ["base", "medium"]
    with manager.use("base"):
        pass
    assert loads == ["tiny.en", "base", "small", "medium"]
