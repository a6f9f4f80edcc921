"""Transcripts as files people open elsewhere: SRT and WebVTT subtitles, plain text, TSV.

Subtitle cues are cut by `app.formats.cues` (readable by broadcast guidelines); whisperx's
`format_timestamp` and `WriteTXT` write times and plain text as the `whisperx` command line does.
`whisperx.utils` needs no torch.
"""

from __future__ import annotations

import html
import io
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from whisperx.utils import WriteTXT, format_timestamp

from app.formats.cues import LANGUAGES_WITHOUT_SPACES, Cue, Layout, build_cues
from app.pipeline.base import NO_SPEECH


class ExportFormat(StrEnum):
    JSON = "json"
    SRT = "srt"
    VTT = "vtt"
    TXT = "txt"
    TSV = "tsv"


NO_SPEECH_CUE_SECONDS = 2.0
"""How long the one cue of an SRT file in which no speech was found is shown."""

MEDIA_TYPES = {
    ExportFormat.JSON: "application/json",
    ExportFormat.SRT: "application/x-subrip",
    ExportFormat.VTT: "text/vtt",
    ExportFormat.TXT: "text/plain",
    ExportFormat.TSV: "text/tab-separated-values",
}


@dataclass(frozen=True)
class SubtitleOptions:
    """How cues are cut: at most `max_line_count` lines of `max_line_width` characters, the speaker label included."""

    max_line_width: int = 42  # the common broadcast guideline for one subtitle line
    max_line_count: int = 2
    highlight_words: bool = False


def _cue_safe(text: str) -> str:
    # "-->" separates cue times in SRT and WebVTT; inside a cue's text it would break parsers.
    return text.replace("-->", "->")


def _srt_time(seconds: float) -> str:
    return str(format_timestamp(seconds, always_include_hours=True, decimal_marker=","))


def _vtt_time(seconds: float) -> str:
    return str(format_timestamp(seconds, always_include_hours=True, decimal_marker="."))


def _cue_text(cue: Cue, layout: Layout, fmt: ExportFormat, highlight: int | None = None) -> str:
    """The cue's lines; in VTT the speaker is a voice tag (`<v SPEAKER_00>`), in SRT a `[SPEAKER_00]: ` label.

    A cue holding two speakers' turns opens each line with its speaker's label (in VTT, a voice span each)."""

    def escape(text: str) -> str:  # WebVTT cue text is HTML-like: & < > must be escaped there
        return html.escape(text, quote=False) if fmt is ExportFormat.VTT else text

    lines: list[str] = []
    index = 0
    for line, speaker in zip(cue.lines, cue.labels, strict=True):
        shown = []
        for word in line:
            text = escape(_cue_safe(word))
            shown.append(f"<u>{text}</u>" if index == highlight else text)
            index += 1
        text = layout.joiner.join(shown)
        if speaker is not None and fmt is ExportFormat.VTT:
            text = f"<v {escape(speaker)}>{text}</v>" if cue.turns else f"<v {escape(speaker)}>{text}"
        elif speaker is not None:
            text = layout.label(speaker) + text
        lines.append(text)
    return "\n".join(lines)


def _timed_texts(cue: Cue, layout: Layout, fmt: ExportFormat, highlight: bool) -> list[tuple[float, float, str]]:
    """The cue's display spans: itself, or with `highlight_words` one span per word, that word underlined."""
    if not highlight:
        return [(cue.start, cue.end, _cue_text(cue, layout, fmt))]
    spans = []
    for index, word in enumerate(cue.words):
        end = cue.words[index + 1].start if index + 1 < len(cue.words) else cue.end
        start = cue.start if index == 0 else word.start
        if end > start:
            spans.append((start, end, _cue_text(cue, layout, fmt, highlight=index)))
    return spans or [(cue.start, cue.end, _cue_text(cue, layout, fmt))]


def _no_speech(fmt: ExportFormat) -> str:
    """What a file says when no speech was found: not an empty file, which reads as a failed export."""
    if fmt is ExportFormat.SRT:  # SRT has no comments: one cue says it
        return f"1\n{_srt_time(0)} --> {_srt_time(NO_SPEECH_CUE_SECONDS)}\n({NO_SPEECH})\n\n"
    if fmt is ExportFormat.VTT:  # a WebVTT comment, never shown over the video
        return f"WEBVTT\n\nNOTE {NO_SPEECH}\n\n"
    return f"({NO_SPEECH})\n"


def _subtitles(result: dict[str, Any], fmt: ExportFormat, options: SubtitleOptions) -> str:
    joiner = "" if result.get("language") in LANGUAGES_WITHOUT_SPACES else " "
    layout = Layout(options.max_line_width, options.max_line_count, joiner)
    spans = [
        span for cue in build_cues(result, layout) for span in _timed_texts(cue, layout, fmt, options.highlight_words)
    ]
    if fmt is ExportFormat.SRT:
        return "".join(
            f"{number}\n{_srt_time(start)} --> {_srt_time(end)}\n{text}\n\n"
            for number, (start, end, text) in enumerate(spans, start=1)
        )
    return "WEBVTT\n\n" + "".join(f"{_vtt_time(start)} --> {_vtt_time(end)}\n{text}\n\n" for start, end, text in spans)


def _tsv(result: dict[str, Any]) -> str:
    """One row per segment: start and end in milliseconds (as whisperx writes them), text, speaker."""
    rows = ["start\tend\ttext\tspeaker"]
    for segment in result["segments"]:
        text = " ".join(segment["text"].split())  # no tab or line break inside a field
        speaker = segment.get("speaker") or ""
        rows.append(f"{round(1000 * segment['start'])}\t{round(1000 * segment['end'])}\t{text}\t{speaker}")
    return "\n".join(rows) + "\n"


def render(result: dict[str, Any], fmt: ExportFormat, options: SubtitleOptions | None = None) -> str:
    """A completed task's result (the API's JSON shape) in a text format."""
    if fmt is ExportFormat.JSON:
        raise ValueError("JSON is the result itself; render only text formats")
    if not result["segments"] and fmt is not ExportFormat.TSV:  # a table keeps its header and no rows
        return _no_speech(fmt)
    if fmt in (ExportFormat.SRT, ExportFormat.VTT):
        return _subtitles(result, fmt, options or SubtitleOptions())
    if fmt is ExportFormat.TSV:
        return _tsv(result)
    buffer = io.StringIO()
    WriteTXT(output_dir="").write_result(result, file=buffer, options={})
    return buffer.getvalue()
