"""The multipart forms of the upload endpoints, as Pydantic models FastAPI reads them into.

The seed's upload and OpenAI's two endpoints share the fields they have in common.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Self

from fastapi import UploadFile
from pydantic import BaseModel, Field, model_validator

from app.api.schemas import TranscriptionTask
from app.formats.openai import Granularity, OpenAIFormat
from app.media import SUPPORTED_EXTENSIONS
from app.voices.references import MAX_KNOWN_SPEAKERS

MAX_PROMPT_CHARS = 2000
"""Whisper reads at most 223 tokens of prompt (its last ones); more text than this is a mistake."""
MAX_URL_CHARS = 4096
MAX_BEAM_SIZE = 20
MAX_SPEAKER_NAME_CHARS = 100
STREAMED_FORMATS = frozenset({OpenAIFormat.JSON, OpenAIFormat.TEXT, OpenAIFormat.DIARIZED_JSON})
"""The formats a streamed transcription (`stream=true`) may ask for: its events are JSON whatever the format."""

Multilingual = Annotated[
    bool,
    Field(
        description="Detect the language of each stretch of speech and transcribe each in its own language, "
        "for recordings that change language; each segment then has a `language`, and the result's `language` "
        "is the most-spoken one. Costs one extra encoder pass per utterance. Not with `language`"
    ),
]

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
    identify_speakers: str | None = Field(
        None,
        max_length=MAX_PROMPT_CHARS,
        description="Name the speakers who match this key's enrolled voices (/api/v1/speakers): `true` for all "
        'of them, or the names to consider, as "Alice, Bob" or ["Alice", "Bob"]',
        examples=["true"],
    )
    model: str | None = Field(
        None, description="Whisper model, one of those GET /v1/models lists (WHISPER_MODELS); omit for the default"
    )
    multilingual: Multilingual = False


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
    model: str = Field(description="`whisper-1` (the server's default model) or one of those GET /v1/models lists")
    prompt: str | None = Field(None, description="Text that guides spelling and style (in English, to translate)")
    temperature: Temperature = None
    multilingual: Multilingual = False


class TranscriptionForm(OpenAIForm):
    language: str | None = Field(None, description="ISO-639-1 code such as `en`; omit to detect it")
    response_format: OpenAIFormat = Field(OpenAIFormat.JSON, description="diarized_json also labels speakers")
    timestamp_granularities: list[Granularity] | None = Field(
        None, alias="timestamp_granularities[]", description="verbose_json: `word`, `segment` (default) or both"
    )
    stream: bool = Field(
        False,
        description="Answer with Server-Sent Events (json, text or diarized_json): `transcript.text.delta` as each "
        "piece is transcribed, `transcript.text.segment` with speakers (diarized_json), then `transcript.text.done`",
    )
    known_speaker_names: list[Annotated[str, Field(min_length=1, max_length=MAX_SPEAKER_NAME_CHARS)]] | None = Field(
        None,
        alias="known_speaker_names[]",
        max_length=MAX_KNOWN_SPEAKERS,
        description="diarized_json: the names of up to 4 speakers, each with a sample in known_speaker_references[]",
        examples=[["Alice", "Bob"]],
    )
    known_speaker_references: list[str] | None = Field(
        None,
        alias="known_speaker_references[]",
        max_length=MAX_KNOWN_SPEAKERS,
        description="For each of known_speaker_names[], in order: a recording of that voice alone (3-10 s of speech) "
        "as a data URL, `data:audio/wav;base64,...`. Used for this request only; nothing is enrolled",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.stream and self.response_format not in STREAMED_FORMATS:
            raise ValueError(
                "stream: a streamed answer is a series of JSON events; use response_format json, text or diarized_json"
            )
        names, references = self.known_speaker_names or [], self.known_speaker_references or []
        if len(names) != len(references):
            raise ValueError(
                f"known_speaker_names[] ({len(names)}) and known_speaker_references[] ({len(references)}): "
                "give one reference recording for each name, in the same order"
            )
        if names and self.response_format is not OpenAIFormat.DIARIZED_JSON:
            raise ValueError("known_speaker_names[]: speakers are labelled only with response_format=diarized_json")
        if len(set(names)) != len(names):
            raise ValueError("known_speaker_names[]: each name may appear once")
        return self


class TranslationForm(OpenAIForm):
    response_format: TranslationFormat = Field(
        TranslationFormat.JSON, description="json (default), text, srt, verbose_json, vtt"
    )
