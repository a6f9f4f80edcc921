"""Word quality in results: scores, untimed words kept and flagged, characters shared among sentences.

The input is shaped as whisperx.align returns it (3.8.6), including its two ways of leaving a
word without evidence: a word whose times were interpolated has no score, and a segment that
could not be aligned at all comes back with no words.
"""

from __future__ import annotations

from typing import Any

from app.pipeline.segments import split_segments
from app.pipeline.whisperx_pipeline import _keep_unaligned_words, _segment


def _shaped(segments: list[dict[str, Any]], with_chars: bool = False) -> list[dict[str, Any]]:
    return [_segment(piece, with_chars) for piece in split_segments(_keep_unaligned_words(segments), "en")]


def test_a_segment_alignment_gave_up_on_keeps_its_words_untimed() -> None:
    failed = {"start": 4.0, "end": 6.5, "text": " 12% at 9:30", "words": [], "chars": None}
    (segment,) = _shaped([failed])
    assert (segment["start"], segment["end"], segment["text"]) == (4.0, 6.5, "12% at 9:30")
    assert [word["word"] for word in segment["words"]] == ["12%", "at", "9:30"]
    for word in segment["words"]:
        assert (word["start"], word["end"], word["score"], word["timed"]) == (None, None, None, False)


def test_timed_words_carry_their_score_and_interpolated_ones_none() -> None:
    aligned = {
        "start": 0.0,
        "end": 2.0,
        "text": "It rose 12%.",
        "words": [
            {"word": "It", "start": 0.1, "end": 0.3, "score": 0.91},
            {"word": "rose", "start": 0.4, "end": 0.8, "score": 0.85},
            {"word": "12%.", "start": 0.8, "end": 1.9},  # times interpolated by whisperx: no score
        ],
    }
    words = _shaped([aligned])[0]["words"]
    assert [(word["score"], word["timed"]) for word in words] == [(0.91, True), (0.85, True), (None, True)]


def test_characters_follow_the_sentence_they_belong_to() -> None:
    text = "Hi. Yes."
    chars = [{"char": c, "start": 0.1 * i, "end": 0.1 * i + 0.05, "score": 0.5} for i, c in enumerate(text)]
    chars[3] = {"char": " "}  # the space between sentences has no times
    segment = {
        "start": 0.0,
        "end": 0.8,
        "text": text,
        "words": [
            {"word": "Hi.", "start": 0.0, "end": 0.25, "score": 0.5},
            {"word": "Yes.", "start": 0.4, "end": 0.75, "score": 0.5},
        ],
        "chars": chars,
    }
    first, second = _shaped([segment], with_chars=True)
    assert "".join(char["char"] for char in first["chars"]) == "Hi. "
    assert "".join(char["char"] for char in second["chars"]) == "Yes."
    assert first["chars"][3] == {"char": " ", "start": None, "end": None, "score": None}
    assert "chars" not in _shaped([segment], with_chars=False)[0]
