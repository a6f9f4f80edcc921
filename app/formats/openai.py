"""A finished transcript in the response formats of OpenAI's `POST /v1/audio/transcriptions`.

Shapes follow the official `openai` package's types (`Transcription`, `TranscriptionVerbose`,
`TranscriptionDiarized`). Whisper decoder statistics that this engine does not report per
segment (`avg_logprob`, `compression_ratio`, `no_speech_prob`, `tokens`, `seek`) are left out
rather than made up.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from fastapi.responses import JSONResponse, PlainTextResponse, Response
from whisperx.utils import LANGUAGES

from app.formats.exports import MEDIA_TYPES, ExportFormat, render


class OpenAIFormat(StrEnum):
    JSON = "json"
    TEXT = "text"
    SRT = "srt"
    VTT = "vtt"
    VERBOSE_JSON = "verbose_json"
    DIARIZED_JSON = "diarized_json"


class Granularity(StrEnum):
    WORD = "word"
    SEGMENT = "segment"


def _text(result: dict[str, Any]) -> str:
    return " ".join(segment["text"].strip() for segment in result["segments"])


def _duration(result: dict[str, Any], duration: float | None) -> float:
    if duration is not None:
        return round(duration, 3)
    return max((segment["end"] for segment in result["segments"]), default=0.0)


def _verbose(result: dict[str, Any], duration: float | None, granularities: set[Granularity]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": result.get("task", "transcribe"),
        # OpenAI names it ("english") and its type is a string: "" when no speech was found (language null).
        "language": LANGUAGES.get(result["language"], result["language"] or ""),
        "duration": _duration(result, duration),
        "text": _text(result),
    }
    if Granularity.SEGMENT in granularities:
        body["segments"] = [
            {"id": index, "start": segment["start"], "end": segment["end"], "text": segment["text"]}
            for index, segment in enumerate(result["segments"])
        ]
    if Granularity.WORD in granularities:
        body["words"] = [
            {"word": word["word"], "start": word["start"], "end": word["end"]}
            for segment in result["segments"]
            for word in segment["words"]
            if word["start"] is not None and word["end"] is not None
        ]
    return body


def _diarized(result: dict[str, Any], duration: float | None) -> dict[str, Any]:
    seconds = _duration(result, duration)
    return {
        "task": result.get("task", "transcribe"),
        "duration": seconds,
        "text": _text(result),
        "segments": [
            {
                "type": "transcript.text.segment",
                "id": f"seg_{index}",
                "start": segment["start"],
                "end": segment["end"],
                "text": segment["text"],
                "speaker": segment["speaker"] or "unknown",
            }
            for index, segment in enumerate(result["segments"])
        ],
        "usage": {"type": "duration", "seconds": seconds},
    }


def openai_response(
    result: dict[str, Any], fmt: OpenAIFormat, granularities: set[Granularity], duration: float | None
) -> Response:
    match fmt:
        case OpenAIFormat.JSON:
            return JSONResponse({"text": _text(result)})
        case OpenAIFormat.TEXT:
            return PlainTextResponse(_text(result) + "\n")
        case OpenAIFormat.SRT | OpenAIFormat.VTT:
            export = ExportFormat(fmt.value)
            return Response(render(result, export), media_type=f"{MEDIA_TYPES[export]}; charset=utf-8")
        case OpenAIFormat.VERBOSE_JSON:
            return JSONResponse(_verbose(result, duration, granularities))
        case OpenAIFormat.DIARIZED_JSON:
            return JSONResponse(_diarized(result, duration))
