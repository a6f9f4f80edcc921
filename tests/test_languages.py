"""Smoothing of per-stretch language detections into runs (app/pipeline/languages.py), on the
probabilities Whisper `base` gave for an English-then-German espeak clip."""

from __future__ import annotations

from app.media import SAMPLE_RATE
from app.pipeline.languages import Stretch, language_runs, mixed_language_warning, most_spoken, run_spans


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


def test_warnings() -> None:
    assert mixed_language_warning("en", 0.9, [("en", 0.9)], [{"en": 0.95}, {"en": 0.6, "de": 0.3}]) is None
    later = mixed_language_warning("en", 0.85, [("en", 0.85)], [{"de": 0.63, "en": 0.2}, {"de": 0.98}])
    assert later is not None
    assert "(en 0.85 at the start, de 0.98 later on); send multilingual=true" in later
    unclear = mixed_language_warning("en", 0.85, [("en", 0.85)], [{"th": 0.37, "de": 0.31, "en": 0.14}])
    assert unclear is not None
    assert "(en 0.85 at the start, th 0.37 later on)" in unclear
    unsure = mixed_language_warning("en", 0.55, [("en", 0.55), ("de", 0.40)], [])
    assert unsure is not None
    assert "(en 0.55, de 0.40)" in unsure
