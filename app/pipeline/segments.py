"""Cut transcript segments into the units people read: one sentence, one speaker.

Whisper's own segments can span a whole 30 s chunk and several speakers; a segment's single
`speaker` label is only true once segments end where a sentence ends or the voice changes.
"""

from __future__ import annotations

from typing import Any

SENTENCE_ENDINGS = (".", "?", "!", "。", "？", "！")
# Scripts written without spaces between words (as whisperx's alignment treats them).
LANGUAGES_WITHOUT_SPACES = frozenset({"ja", "zh", "yue", "th", "lo", "my", "km"})


def split_segments(segments: list[dict[str, Any]], language: str) -> list[dict[str, Any]]:
    joiner = "" if language in LANGUAGES_WITHOUT_SPACES else " "
    pieces: list[dict[str, Any]] = []
    for segment in segments:
        words = segment.get("words") or []
        if not words:
            pieces.append(segment)
            continue
        current: list[dict[str, Any]] = []
        own: list[dict[str, Any]] = []
        for word in words:
            if current and (
                current[-1]["word"].endswith(SENTENCE_ENDINGS) or word.get("speaker") != current[-1].get("speaker")
            ):
                own.append(_piece(current, segment, joiner))
                current = []
            current.append(word)
        own.append(_piece(current, segment, joiner))
        if segment.get("chars") is not None:
            _share_chars(segment["chars"], own)
        pieces += own
    return pieces


def _share_chars(chars: list[dict[str, Any]], pieces: list[dict[str, Any]]) -> None:
    """Give each piece the characters in its time span; an untimed character goes with the one before it."""
    index = 0
    for piece in pieces:
        piece["chars"] = []
    for char in chars:
        start = char.get("start")
        while start is not None and index + 1 < len(pieces) and start >= pieces[index + 1]["start"]:
            index += 1
        pieces[index]["chars"].append(char)


def _piece(words: list[dict[str, Any]], segment: dict[str, Any], joiner: str) -> dict[str, Any]:
    timed = [word for word in words if word.get("start") is not None]
    return {
        "start": timed[0]["start"] if timed else segment["start"],
        "end": max(word["end"] for word in timed) if timed else segment["end"],
        # Whisper's own spacing where it is known (a word's `spaced` form), else the language's.
        "text": "".join(word.get("spaced", joiner + word["word"]) for word in words).strip(),
        "speaker": words[0].get("speaker", segment.get("speaker")),
        "words": words,
    }
