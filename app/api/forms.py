"""The multipart forms of the upload endpoints, as Pydantic models FastAPI reads them into.

The seed's upload and OpenAI's two endpoints share the fields they have in common.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from fastapi import UploadFile
from pydantic import BaseModel, Field

from app.api.schemas import TranscriptionTask
from app.formats.openai import Granularity, OpenAIFormat
from app.media import SUPPORTED_EXTENSIONS

MAX_PROMPT_CHARS = 2000
"""Whisper reads at most 223 tokens of prompt (its last ones); more text than this is a mistake."""
MAX_URL_CHARS = 4096
MAX_BEAM_SIZE = 20

Temperature = Annotated[
    float | None,
    Field(ge=0, le=1, description="Sampling temperature; omit for Whisper's fallback schedule (0, 0.2, … 1)"),
]

AUDIO_FORMATS = ", ".join(SUPPORTED_EXTENSIONS)


class UploadForm(BaseModel):
    """POST /api/v1/transcribe/upload."""

    file: UploadFile | None = Field(None, description=f"Audio or video: {AUDIO_FORMATS}. Give this or `audio_url`")

    language: str | None = Field(None, description="Language code such as `en`; omit to detect it", examples=["en"])
    min_speakers: int | None = Field(None, ge=1, description="Fewest speakers to find")
    max_speakers: int | None = Field(None, ge=1, description="Most speakers to find")
    enable_diarization: bool = Field(True, description="Label speakers")
    prompt: str | None = Field(
        None, max_length=MAX_PROMPT_CHARS, description="The same as `initial_prompt` (the earlier name)"
    )
    callback_url: str | None = Field(
        None, description="POSTed the signed status document when the task completes or fails"
    )
    audio_url: str | None = Field(
        None,
        max_length=MAX_URL_CHARS,
        description="An http(s) URL the server downloads the audio from, instead of `file` (give one of the "
        "two). Subject to MAX_UPLOAD_MB, MAX_AUDIO_SECONDS and AUDIO_URL_TIMEOUT_SECONDS; non-public "
        "addresses are refused unless AUDIO_URL_ALLOW_PRIVATE is set",
        examples=["https://example.com/recordings/meeting.mp3"],
    )
    task: TranscriptionTask = Field(
        TranscriptionTask.TRANSCRIBE,
        description="`transcribe` (default), or `translate` into English (multilingual models only)",
    )
    initial_prompt: str | None = Field(
        None,
        max_length=MAX_PROMPT_CHARS,
        description="Text Whisper reads as if it came before the audio: teaches it the spelling of names "
        "and terms, and a style",
        examples=["Minutes of the Qorvath Industries board meeting, chaired by Siobhan Ní Dhuibhir."],
    )
    hotwords: str | None = Field(
        None,
        max_length=MAX_PROMPT_CHARS,
        description="Words to expect (names, jargon), separated by spaces or commas",
        examples=["Kubernetes, PostgreSQL, Ní Dhuibhir"],
    )
    beam_size: int | None = Field(
        None,
        ge=1,
        le=MAX_BEAM_SIZE,
        description="Beams searched while decoding (default: the server's BEAM_SIZE)",
        examples=[5],
    )
    temperature: Temperature = Field(None, examples=[0.0])
    vad_onset: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Speech probability at which voice activity starts; lower finds quieter speech (default 0.5)",
        examples=[0.5],
    )
    vad_offset: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Speech probability below which voice activity ends; at most `vad_onset` "
        "(default: 0.15 below vad_onset)",
        examples=[0.35],
    )
    chunk_size: int | None = Field(
        None, ge=1, le=30, description="Longest stretch of speech transcribed as one piece, seconds (default 30)"
    )
    suppress_numerals: bool = Field(False, description="Spell numbers out as words: no digits, %, $ or £ in the text")
    return_char_alignments: bool = Field(
        False, description="Also time each character (`chars` in segments); only with wav2vec2 alignment"
    )


class TranslationFormat(StrEnum):
    """OpenAI's translation endpoint has no diarized_json."""

    JSON = "json"
    TEXT = "text"
    SRT = "srt"
    VERBOSE_JSON = "verbose_json"
    VTT = "vtt"


class OpenAIForm(BaseModel):
    """What OpenAI's /v1/audio/transcriptions and /translations both take."""

    file: UploadFile = Field(description=f"Audio or video: {AUDIO_FORMATS}")
    model: str = Field(description="Accepted for compatibility (e.g. `whisper-1`); the server's WHISPER_MODEL is used")
    prompt: str | None = Field(None, description="Text that guides spelling and style (in English, to translate)")
    temperature: Temperature = None


class TranscriptionForm(OpenAIForm):
    language: str | None = Field(None, description="ISO-639-1 code such as `en`; omit to detect it")
    response_format: OpenAIFormat = Field(OpenAIFormat.JSON, description="diarized_json also labels speakers")
    timestamp_granularities: list[Granularity] | None = Field(
        None, alias="timestamp_granularities[]", description="verbose_json: `word`, `segment` (default) or both"
    )
    stream: bool = Field(False, description="Not supported: follow /api/v1/transcribe/events instead")


class TranslationForm(OpenAIForm):
    response_format: TranslationFormat = Field(
        TranslationFormat.JSON, description="json (default), text, srt, verbose_json, vtt"
    )
