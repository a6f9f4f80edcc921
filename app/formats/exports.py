"""Transcripts as files people open elsewhere: SRT and WebVTT subtitles, plain text, TSV.

whisperx's own writers (`whisperx.utils`) do the formatting, line splitting and speaker
prefixes, so the files match what the `whisperx` command line writes; this module only adapts
the API's result to them and collects their output in memory. `whisperx.utils` needs no torch.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from whisperx.utils import SubtitlesWriter, WriteSRT, WriteTSV, WriteTXT, WriteVTT


class ExportFormat(StrEnum):
    JSON = "json"
    SRT = "srt"
    VTT = "vtt"
    TXT = "txt"
    TSV = "tsv"


MEDIA_TYPES = {
    ExportFormat.JSON: "application/json",
    ExportFormat.SRT: "application/x-subrip",
    ExportFormat.VTT: "text/vtt",
    ExportFormat.TXT: "text/plain",
    ExportFormat.TSV: "text/tab-separated-values",
}


@dataclass(frozen=True)
class SubtitleOptions:
    """How subtitle cues are cut: at most `max_line_count` lines of about `max_line_width` characters."""

    max_line_width: int = 42  # the common broadcast guideline for one subtitle line
    max_line_count: int = 2
    highlight_words: bool = False

    def as_writer_options(self) -> dict[str, Any]:
        return {
            "max_line_width": self.max_line_width,
            "max_line_count": self.max_line_count,
            "highlight_words": self.highlight_words,
        }


class _CuesWithinSegments(SubtitlesWriter):  # type: ignore[misc]
    """Cut each segment into cues on its own.

    With line limits set, whisperx's writer lets a cue run across segments and labels it with
    its first segment's speaker; segments here end at speaker changes, so cutting them one by one
    keeps every cue to one speaker and every sentence end a cue end.
    """

    def iterate_result(self, result: dict[str, Any], options: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
        for segment in result["segments"]:
            for start, end, text in super().iterate_result({**result, "segments": [segment]}, options):
                yield start, end, _tidy(text)


def _tidy(text: str) -> str:
    """Single spaces, none at line ends: words carry a leading space only so line widths count it."""
    return "\n".join(" ".join(line.split()) for line in text.split("\n"))


class _SRT(_CuesWithinSegments, WriteSRT):  # type: ignore[misc]
    pass


class _VTT(_CuesWithinSegments, WriteVTT):  # type: ignore[misc]
    pass


_WRITERS = {ExportFormat.SRT: _SRT, ExportFormat.VTT: _VTT, ExportFormat.TXT: WriteTXT, ExportFormat.TSV: WriteTSV}


def _writer_word(word: dict[str, Any]) -> dict[str, Any]:
    # The writers test `"start" in word`: an untimed word must lack the keys, not hold null.
    timed = word.get("start") is not None and word.get("end") is not None
    # A leading space, as Whisper's own words have: the writers count it in the line width.
    out = {"word": " " + _cue_safe(word["word"].strip())}
    if timed:
        out.update(start=word["start"], end=word["end"])
    return out


def _cue_safe(text: str) -> str:
    # "-->" separates cue times in SRT and WebVTT; inside a cue's text it would break parsers.
    return text.replace("-->", "->")


def _writer_segment(segment: dict[str, Any], fmt: ExportFormat) -> dict[str, Any]:
    words = [_writer_word(word) for word in segment.get("words") or []]
    if not words:  # no word list: the whole segment is one timed "word"
        words = [{"word": _cue_safe(segment["text"].strip()), "start": segment["start"], "end": segment["end"]}]
    text = segment["text"]
    if fmt is ExportFormat.TSV and segment.get("speaker"):
        # WriteTSV has no speaker column; prefix as WriteTXT does, so the label survives.
        text = f"[{segment['speaker']}]: {text.strip()}"
    return {**segment, "text": text, "words": words}


def render(result: dict[str, Any], fmt: ExportFormat, options: SubtitleOptions | None = None) -> str:
    """A completed task's result (the API's JSON shape) in a text format."""
    if fmt is ExportFormat.JSON:
        raise ValueError("JSON is the result itself; render only text formats")
    adapted = {**result, "segments": [_writer_segment(segment, fmt) for segment in result["segments"]]}
    buffer = io.StringIO()
    writer_options = (options or SubtitleOptions()).as_writer_options()
    _WRITERS[fmt](output_dir="").write_result(adapted, file=buffer, options=writer_options)
    return buffer.getvalue()
