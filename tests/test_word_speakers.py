"""Smoothing of word speakers by the turns around them (app/pipeline/word_speakers.py), on hand-made
words and turns: what a murmur over one person's speech may and may not take from them."""

from __future__ import annotations

from typing import Any

import pandas as pd  # type: ignore[import-untyped]  # no pandas-stubs in the dev requirements

from app.pipeline.word_speakers import smooth


def _words(*spec: tuple[str, float, float, str]) -> list[dict[str, Any]]:
    return [{"word": word, "start": start, "end": end, "speaker": speaker} for word, start, end, speaker in spec]


def _turns(*spec: tuple[float, float, str]) -> pd.DataFrame:
    return pd.DataFrame([{"start": start, "end": end, "speaker": speaker} for start, end, speaker in spec])


def _speakers(words: list[dict[str, Any]]) -> list[str]:
    return [word["speaker"] for word in words]


def test_a_word_under_a_murmur_goes_back_to_the_speaker_who_talks_over_it() -> None:
    # A talks from 0 to 4 s; B murmurs over 1.9-2.3 s, and the word there was given to B.
    words = _words(("the", 1.2, 1.5, "A"), ("objects", 1.6, 2.2, "B"), ("of", 2.2, 2.4, "A"), ("it", 2.4, 2.6, "A"))
    smooth([{"words": words}], _turns((0.0, 4.0, "A"), (1.9, 2.3, "B")))
    assert _speakers(words) == ["A", "A", "A", "A"]


def test_two_words_glued_to_a_speakers_sentence_go_back_to_them() -> None:
    # The diarizer saw B for a moment inside A's sentence (no overlap, no pause): a flicker.
    words = _words(
        ("ask", 1.0, 1.3, "A"), ("not", 1.3, 1.5, "A"), ("what", 1.5, 1.7, "B"),
        ("your", 1.7, 1.9, "B"), ("country", 1.9, 2.3, "A"),
    )  # fmt: skip
    smooth([{"words": words}], _turns((0.0, 1.5, "A"), (1.5, 1.9, "B"), (1.9, 3.0, "A")))
    assert _speakers(words) == ["A"] * 5


def test_a_short_answer_between_pauses_keeps_its_own_speaker() -> None:
    # B answers "Yes." in a pause of A's, while A is silent: a real turn, not a murmur.
    words = _words(("right", 1.0, 1.4, "A"), ("Yes.", 2.0, 2.4, "B"), ("so", 3.0, 3.2, "A"))
    smooth([{"words": words}], _turns((0.5, 1.5, "A"), (1.9, 2.5, "B"), (2.9, 4.0, "A")))
    assert _speakers(words) == ["A", "B", "A"]


def test_three_words_are_a_turn_not_a_flicker() -> None:
    words = _words(
        ("we", 1.0, 1.2, "A"), ("I", 1.2, 1.3, "B"), ("agree", 1.3, 1.6, "B"), ("fully", 1.6, 1.9, "B"),
        ("then", 1.9, 2.1, "A"),
    )  # fmt: skip
    smooth([{"words": words}], _turns((0.0, 1.2, "A"), (1.2, 1.9, "B"), (1.9, 3.0, "A")))
    assert _speakers(words) == ["A", "B", "B", "B", "A"]


def test_a_word_between_two_other_speakers_is_left_alone() -> None:
    words = _words(("yes", 1.0, 1.2, "A"), ("no", 1.2, 1.4, "B"), ("maybe", 1.4, 1.6, "C"))
    smooth([{"words": words}], _turns((0.0, 1.2, "A"), (1.2, 1.4, "B"), (1.4, 2.0, "C")))
    assert _speakers(words) == ["A", "B", "C"]


def test_words_across_segments_are_smoothed_together_and_untimed_words_are_skipped() -> None:
    first = _words(("and", 1.0, 1.2, "A"), ("so", 1.2, 1.4, "B"))
    untimed = {"word": "my", "start": None, "end": None, "speaker": "B"}
    second = [untimed, *_words(("fellow", 1.5, 1.8, "A"))]
    smooth([{"words": first}, {"words": second}], _turns((0.0, 2.0, "A"), (1.2, 1.4, "B")))
    assert _speakers(first) == ["A", "A"]
    assert untimed["speaker"] == "B"
