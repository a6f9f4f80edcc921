"""With no `language`: the language, and any second one, read from the windows the transcription
encodes anyway; and a file without speech. Embedded `base` model, called in-process.

The calls into the CTranslate2 model are counted through the speed bench's forwarding proxy
(bench/speed.py `model_timed`), the one the bench reports encoder time with.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import srt

from app.api.schemas import TranscriptionResult
from app.config import Settings
from app.formats.exports import ExportFormat, render
from app.formats.openai import OpenAIFormat, openai_response
from app.pipeline.base import NO_SPEECH, Job
from app.pipeline.whisperx_pipeline import WhisperXPipeline
from bench.diarization import make_dialogue
from bench.language_check import mixed_clips
from bench.speed import MODEL_CALLS, model_timed
from tests.real.conftest import KNOWN_TEXT, transcript_text, word_error_rate
from tests.real.test_subtitles import TURNS


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> WhisperXPipeline:
    """The default pipeline, one window a batch (as the real-tier server runs), no alignment model offline."""
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, api_keys="unused", model_cache_dir=tmp_path_factory.mktemp("cache"), max_concurrent_tasks=1,
        batch_size=1,
    )  # fmt: skip
    return WhisperXPipeline(settings)


def _run(pipeline: WhisperXPipeline, path: Path, language: str | None = None) -> tuple[dict[str, Any], dict[str, int]]:
    """The result (no diarization) and the calls into the Whisper model, counted by the bench's proxy."""
    calls: dict[str, int] = {}
    with (
        pipeline._whisper.use(pipeline.model_name) as whisper,
        model_timed(whisper.model, dict.fromkeys(MODEL_CALLS, 0.0), calls),
    ):
        result = pipeline.run(Job("t", path, language=language, enable_diarization=False), lambda *_: None).result
    return result, calls


@pytest.fixture(scope="module")
def clips(known_speech: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("languages")
    long = folder / "known-three-times.wav"  # ~33 s: two windows of speech
    subprocess.run(["sox", *[str(known_speech)] * 3, str(long)], check=True)
    silence = folder / "silence.wav"
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", str(silence), "trim", "0", "20"], check=True)
    make_dialogue("two-voices", TURNS, 0.4, folder)
    return {"long": long, "silence": silence, "dialogue": folder / "two-voices.wav", **mixed_clips(folder)}


@pytest.fixture(scope="module")
def long_runs(pipeline: WhisperXPipeline, clips: dict[str, Path]) -> dict[str, tuple[dict[str, Any], dict[str, int]]]:
    return {"auto": _run(pipeline, clips["long"]), "given": _run(pipeline, clips["long"], language="en")}


def test_the_automatic_language_costs_no_encoder_pass(
    long_runs: dict[str, tuple[dict[str, Any], dict[str, int]]],
) -> None:
    (auto, auto_calls), (given, given_calls) = long_runs["auto"], long_runs["given"]
    assert auto["language"] == "en"
    assert word_error_rate(" ".join([KNOWN_TEXT] * 3), transcript_text(auto)) < 0.1
    assert transcript_text(auto) == transcript_text(given)
    # Two windows, one a batch: each encoded once, with or without a language.
    assert auto_calls["encode"] == given_calls["encode"] == 2
    assert auto_calls["encoded_windows"] == given_calls["encoded_windows"] == 2
    # The language, and the check for a second one, cost one decoder step a batch, on its encoding.
    assert auto_calls["detect_language"] == auto_calls["encode"]
    assert "detect_language" not in given_calls
    assert auto_calls["generate"] == given_calls["generate"]


def test_single_language_speech_raises_no_warning(
    pipeline: WhisperXPipeline,
    clips: dict[str, Path],
    pyannote_sample: tuple[Path, str],
    long_runs: dict[str, tuple[dict[str, Any], dict[str, int]]],
) -> None:
    results = {"long": long_runs["auto"][0]}
    results.update({path.name: _run(pipeline, path)[0] for path in (clips["dialogue"], pyannote_sample[0])})
    for name, result in results.items():
        assert result["language"] == "en", name
        assert "warnings" not in result, (name, result.get("warnings"))


@pytest.mark.parametrize("name", ["en-then-de"])
def test_mixed_language_clips_are_flagged(pipeline: WhisperXPipeline, clips: dict[str, Path], name: str) -> None:
    result, _ = _run(pipeline, clips[name])
    [warning] = result["warnings"]
    assert "more than one language" in warning
    assert "multilingual=true" in warning


def test_silence_has_no_language_and_says_no_speech_was_found(
    pipeline: WhisperXPipeline, clips: dict[str, Path]
) -> None:
    result, calls = _run(pipeline, clips["silence"])
    assert result["language"] is None
    assert result["segments"] == []
    assert result["notes"] == [NO_SPEECH]
    assert "warnings" not in result
    assert "encode" not in calls, "nothing to transcribe, nothing encoded"


def test_a_silent_file_says_no_speech_found_in_its_message_and_exports(
    pipeline: WhisperXPipeline, clips: dict[str, Path]
) -> None:
    """Diarization on, as an upload has it by default; the exports as the result and OpenAI routes render them."""
    output = pipeline.run(Job("t", clips["silence"]), lambda *_: None)
    assert output.note == NO_SPEECH, "the task's message: 'Transcription completed; no speech found'"
    result = output.result
    assert (result["language"], result["segments"], result["speakers"]) == (None, [], [])
    TranscriptionResult.model_validate(result)
    for fmt in (ExportFormat.SRT, ExportFormat.VTT, ExportFormat.TXT):
        assert NO_SPEECH in render(result, fmt), fmt
    assert [cue.content for cue in srt.parse(render(result, ExportFormat.SRT))] == [f"({NO_SPEECH})"]
    assert render(result, ExportFormat.TSV) == "start\tend\ttext\tspeaker\n"
    verbose = json.loads(bytes(openai_response(result, OpenAIFormat.VERBOSE_JSON, set(), 20.0).body))
    assert (verbose["language"], verbose["text"]) == ("", ""), "OpenAI's types: a string language, even when none"
