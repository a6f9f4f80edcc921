"""Each word's speaker: whisperx's assignment by overlap with the diarizer's turns, then smoothed by
the turns around it, so that a word or two inside one person's speech is not handed to a voice that
only murmurs over it (or that the diarizer glimpsed there for a moment).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped]  # no pandas-stubs in the dev requirements

MAX_FLIP_WORDS = 2
"""Longest run of words that is given back to the speaker on both sides of it."""
PAUSE_SECONDS = 0.3
"""A gap between two words at least this long may be a change of turn; a shorter one is not."""


def assign_speakers(turns: pd.DataFrame, segments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`segments` with a speaker on every segment and word (whisperx's assignment), smoothed."""
    import whisperx

    labelled = list(whisperx.assign_word_speakers(turns, {"segments": segments}, fill_nearest=True)["segments"])
    for segment in labelled:
        for word in segment.get("words", []):
            # Words alignment could not time get no speaker from the turns: take their segment's.
            word.setdefault("speaker", segment.get("speaker"))
    smooth(labelled, turns)
    return labelled


def smooth(segments: list[dict[str, Any]], turns: pd.DataFrame) -> None:
    """Give a run of at most MAX_FLIP_WORDS words back to the speaker of the words either side of it
    (who must be the same) where that speaker still talks over the run, or where no pause sets the
    run apart from them. A short answer between two pauses, with the other voice silent, keeps its speaker.
    """
    words = [
        word
        for segment in segments
        for word in segment.get("words", [])
        if word.get("start") is not None and word.get("end") is not None and word.get("speaker") is not None
    ]
    spans = _spans(turns)
    changed = True
    while changed:
        changed = False
        runs = _runs([word["speaker"] for word in words])
        for (before, _), (first, end), (after, _) in zip(runs, runs[1:], runs[2:], strict=False):
            speaker = words[before]["speaker"]
            if end - first > MAX_FLIP_WORDS or words[after]["speaker"] != speaker:
                continue
            start, stop = words[first]["start"], words[end - 1]["end"]
            joined = start - words[first - 1]["end"] < PAUSE_SECONDS and words[end]["start"] - stop < PAUSE_SECONDS
            if joined or _covered(spans.get(speaker, []), start, stop) >= 0.5 * (stop - start):
                for word in words[first:end]:
                    word["speaker"] = speaker
                changed = True
                break


def _runs(labels: list[Any]) -> list[tuple[int, int]]:
    """(first index, end index) of each run of equal labels."""
    runs: list[tuple[int, int]] = []
    for index, label in enumerate(labels):
        if runs and labels[runs[-1][0]] == label:
            runs[-1] = (runs[-1][0], index + 1)
        else:
            runs.append((index, index + 1))
    return runs


def _spans(turns: pd.DataFrame) -> dict[Any, list[tuple[float, float]]]:
    spans: dict[Any, list[tuple[float, float]]] = {}
    for start, end, speaker in zip(turns["start"], turns["end"], turns["speaker"], strict=True):
        spans.setdefault(speaker, []).append((float(start), float(end)))
    return spans


def _covered(spans: list[tuple[float, float]], start: float, stop: float) -> float:
    """Seconds of [start, stop] inside the spans (a speaker's turns do not overlap each other)."""
    return sum(max(0.0, min(stop, end) - max(start, begin)) for begin, end in spans)
