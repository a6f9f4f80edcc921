"""Smoothing of per-stretch language detections into runs (app/pipeline/languages.py), on the
probabilities Whisper `base` gave for an English-then-German espeak clip."""

from __future__ import annotations

from itertools import pairwise

from app.media import SAMPLE_RATE
from app.pipeline.languages import (
    SLICE_SECONDS,
    Stretch,
    Window,
    language_runs,
    likeliest,
    most_spoken,
    run_spans,
    second_language_warning,
    slice_spans,
)


def _stretches(*detections: tuple[float, dict[str, float]]) -> list[Stretch]:
    stretches, start = [], 0
    for seconds, probabilities in detections:
        end = start + round(seconds * SAMPLE_RATE)
        stretches.append(Stretch(((start, end),), probabilities))
        start = end + SAMPLE_RATE // 2
    return stretches


ENGLISH = {"en": 0.94, "la": 0.03, "nn": 0.01}


def test_a_change_of_language_is_kept_and_stray_guesses_join_their_neighbours() -> None:
    stretches = _stretches(
        (7, ENGLISH), (7, ENGLISH), (4, {"en": 0.93}),
        (7, {"la": 0.38, "en": 0.27, "de": 0.0}),  # English, then German: the start of the change
        (7, {"de": 0.64, "en": 0.04}), (6, {"de": 0.49, "en": 0.2}), (2, {"de": 0.52, "en": 0.11}),
    )  # fmt: skip
    runs = language_runs(stretches)
    assert [run.language for run in runs] == ["en", "de"]
    assert most_spoken(runs) == "en"
    spans = run_spans(runs, stretches[-1].end + SAMPLE_RATE)
    assert spans[0][1] == 0
    assert spans[-1][2] == stretches[-1].end + SAMPLE_RATE
    assert spans[0][2] == spans[1][1], "the spans cover the recording without a gap"


def test_one_language_stays_one_run() -> None:
    stretches = _stretches((8, ENGLISH), (3, {"cy": 0.5, "en": 0.4}), (8, ENGLISH), (8, {"en": 0.7, "de": 0.2}))
    assert [run.language for run in language_runs(stretches)] == ["en"]


def test_a_short_stretch_in_another_language_is_not_a_run_of_its_own() -> None:
    stretches = _stretches((8, ENGLISH), (2.5, {"de": 0.9, "en": 0.05}), (8, ENGLISH))
    assert [run.language for run in language_runs(stretches)] == ["en"]


def test_each_window_is_read_in_stretches_that_cover_its_speech() -> None:
    assert slice_spans(5.0) == [(0.0, 5.0)]
    assert slice_spans(SLICE_SECONDS) == [(0.0, SLICE_SECONDS)]
    spans = slice_spans(29.5)
    assert [seconds for _, seconds in spans] == [SLICE_SECONDS] * 4
    assert spans[0][0] == 0.0
    assert spans[-1][0] + spans[-1][1] == 29.5, "the last stretch ends with the speech"
    assert all(b[0] <= a[0] + a[1] for a, b in pairwise(spans)), "no speech left unread"


def test_the_file_language_weighs_each_stretch_by_its_speech() -> None:
    windows = [Window(0.0, 8.0, {"de": 0.6, "en": 0.3}), Window(8.0, 2.0, {"en": 0.9, "de": 0.05})]
    language, probability = likeliest(windows)
    assert language == "de"
    assert abs(probability - (0.6 * 8 + 0.05 * 2) / 10) < 1e-9


def _stretch(start: float, **probabilities: float) -> Window:
    return Window(start, SLICE_SECONDS, probabilities)


def test_a_stretch_unlikely_to_be_the_file_language_raises_the_warning() -> None:
    # What `base` read from an English-then-German espeak clip's encoding (bench/language_check.py).
    windows = [
        _stretch(0, en=0.95, la=0.03), _stretch(8, en=0.64, de=0.09), _stretch(16, lv=0.44, la=0.19, en=0.05),
        _stretch(17.4, de=0.25, la=0.19, en=0.04),
    ]  # fmt: skip
    warning = second_language_warning("en", windows)
    assert warning is not None
    assert "more than one language" in warning
    assert "from about 16 s" in warning
    assert "(en 0.05, likeliest lv 0.44)" in warning
    assert "multilingual=true" in warning


def test_single_language_speech_and_short_stretches_raise_none() -> None:
    # The lowest English stretches measured on single-language speech: espeak dialogues 0.77; a real
    # meeting's noisy stretches 0.35 (Welsh above it) and 0.19 (no other language near it).
    assert second_language_warning("en", [_stretch(0, en=0.9), _stretch(8, en=0.77, fi=0.05)]) is None
    assert second_language_warning("en", [_stretch(0, cy=0.62, en=0.35), _stretch(8, en=0.7, cy=0.29)]) is None
    assert second_language_warning("en", [_stretch(0, en=0.19, ms=0.08, zh=0.07), _stretch(8, en=0.6)]) is None
    # A short window (under a stretch of speech) is too unsure to go by, however it reads.
    assert second_language_warning("en", [_stretch(0, en=0.95), Window(8, 4.9, {"la": 0.6, "en": 0.1})]) is None
    assert second_language_warning("en", []) is None
