"""What a request can make a worker fetch: the real pipeline on the embedded `base`, downloads allowed,
every host name lookup and connection recorded and refused (a hub that cannot be reached).

- ALIGN_LANGUAGES: a language left out gets Whisper's word times and a note, and nothing is fetched;
- MAX_LOADED_MODELS=1: a request for a model that cannot be had leaves the default loaded.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from app.config import Settings
from app.pipeline.base import Job, PipelineError
from app.pipeline.whisperx_pipeline import WORD_TIMING_WHISPER, WhisperXPipeline


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> WhisperXPipeline:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, api_keys="unused", whisper_model="base", align_languages="en", max_loaded_models=1,
        model_cache_dir=tmp_path_factory.mktemp("cache"), offline=False, max_concurrent_tasks=1,
    )  # fmt: skip
    pipeline = WhisperXPipeline(settings)
    pipeline.finish_loading()
    return pipeline


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Downloads allowed, and every host name looked up or connection attempted is recorded and refused."""
    attempted: list[Any] = []

    def lookup(host: Any, *_: Any, **__: Any) -> Any:
        attempted.append(host)
        raise socket.gaierror(socket.EAI_NONAME, f"the test looks up no host ({host})")

    def connect(_: socket.socket, address: Any) -> None:
        attempted.append(address)
        raise ConnectionRefusedError(f"the test refuses connections ({address})")

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempted


def test_a_language_left_out_of_align_languages_fetches_nothing_and_says_so(
    pipeline: WhisperXPipeline, connections: list[Any], short_speech: Path
) -> None:
    output = pipeline.run(Job("fi", short_speech, language="fi", enable_diarization=False), lambda *_: None)
    note = "words timed by Whisper; no alignment model is offered for fi (ALIGN_LANGUAGES)"
    assert connections == [], "the hub was asked for an aligner ALIGN_LANGUAGES does not offer"
    assert (output.result["language"], output.result["word_timing"]) == ("fi", WORD_TIMING_WHISPER)
    assert output.result["notes"] == [note]
    assert output.note == note  # the task's message ends in it


def test_a_model_that_cannot_be_had_leaves_the_default_loaded(
    pipeline: WhisperXPipeline, connections: list[Any], short_speech: Path
) -> None:
    assert pipeline.info().loaded_models == ("base",)
    with pytest.raises(PipelineError, match=r"python -m app\.models pull small"):
        pipeline.run(Job("small", short_speech, model="small", enable_diarization=False), lambda *_: None)
    assert connections, "the download was tried (and failed)"
    info = pipeline.info()  # what the worker reports to /health after each task
    assert info.loaded_models == ("base",), "the default was unloaded for a model that never loaded"
    assert "small" in dict(info.model_errors)
