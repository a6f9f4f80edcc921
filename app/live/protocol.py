"""OpenAI's Realtime transcription protocol: the client events a session takes, and the server events it sends.

The GA shape (`session.update` with `session.type` `transcription`, `audio.input.format`,
`audio.input.transcription`, `audio.input.turn_detection`) and the beta one
(`transcription_session.update` with `input_audio_format`, `input_audio_transcription`,
`turn_detection`) are both read into one `LiveConfig`. Only 24 kHz mono 16-bit PCM is taken, as
OpenAI's `audio/pcm` (beta: `pcm16`) is.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

INPUT_RATE = 24000
MAX_EVENT_BYTES = 1024 * 1024
"""Largest client event: ten seconds of audio in one append is about 640 kB of base64."""


class ProtocolError(Exception):
    """A client event that cannot be taken; `code` and the message go into the `error` event."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.param = param


@dataclass(frozen=True)
class ServerVad:
    threshold: float = 0.5
    """Speech probability (Silero VAD, 0–1) at which speech starts."""
    prefix_padding_ms: int = 300
    """Audio before the detected start that the utterance keeps."""
    silence_duration_ms: int = 500
    """Silence that ends an utterance."""


@dataclass(frozen=True)
class LiveConfig:
    model: str | None = None
    language: str | None = None
    prompt: str | None = None
    turn_detection: ServerVad | None = field(default_factory=ServerVad)
    """None: the client commits each utterance itself (`input_audio_buffer.commit`)."""
    identify_speakers: bool = False
    """Name speakers who match the key's enrolled voices (an extension; OpenAI has no such field)."""


@dataclass(frozen=True)
class Append:
    pcm: bytes


@dataclass(frozen=True)
class Commit:
    pass


@dataclass(frozen=True)
class Clear:
    pass


@dataclass(frozen=True)
class Update:
    config: LiveConfig
    beta: bool


ClientEvent = Append | Commit | Clear | Update


def _object(value: Any, param: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError("invalid_value", f"{param} must be an object", param)
    return value


def _number(value: Any, param: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ProtocolError("invalid_value", f"{param} must be a number from {low:g} to {high:g}", param)
    return float(value)


def _text(value: Any, param: str, limit: int = 2000) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise ProtocolError("invalid_value", f"{param} must be text of at most {limit} characters", param)
    return value or None


def _turn_detection(value: Any, param: str, current: ServerVad | None) -> ServerVad | None:
    if value is None:
        return None
    settings = _object(value, param)
    kind = settings.get("type", "server_vad")
    if kind != "server_vad":
        raise ProtocolError(
            "invalid_value", f"{param}.type: only server_vad (or null, to commit by hand) is supported", param
        )
    base = current or ServerVad()
    changes: dict[str, Any] = {}
    if settings.get("threshold") is not None:
        changes["threshold"] = _number(settings["threshold"], f"{param}.threshold", 0.0, 1.0)
    for name in ("prefix_padding_ms", "silence_duration_ms"):
        if settings.get(name) is not None:
            changes[name] = int(_number(settings[name], f"{param}.{name}", 0, 10000))
    return replace(base, **changes)


def _format(value: Any, param: str) -> None:
    if value is None or value == "pcm16":
        return
    form = _object(value, param) if not isinstance(value, str) else {"type": value}
    if form.get("type") not in ("audio/pcm", "pcm16") or form.get("rate", INPUT_RATE) != INPUT_RATE:
        raise ProtocolError(
            "invalid_value", f"{param}: only 24 kHz mono 16-bit PCM is taken (audio/pcm, rate 24000; beta: pcm16)",
            param,
        )  # fmt: skip


def _transcription(value: Any, param: str, config: LiveConfig) -> LiveConfig:
    settings = _object(value, param)
    return replace(
        config,
        model=_text(settings.get("model"), f"{param}.model", 200) or config.model,
        language=_text(settings.get("language"), f"{param}.language", 20) or config.language,
        prompt=_text(settings.get("prompt"), f"{param}.prompt") or config.prompt,
    )


def _session(session: dict[str, Any], beta: bool, config: LiveConfig) -> LiveConfig:
    if beta:
        _format(session.get("input_audio_format"), "session.input_audio_format")
        config = _transcription(session.get("input_audio_transcription"), "session.input_audio_transcription", config)
        if "turn_detection" in session:
            config = replace(
                config,
                turn_detection=_turn_detection(
                    session["turn_detection"], "session.turn_detection", config.turn_detection
                ),
            )
    else:
        if session.get("type", "transcription") != "transcription":
            raise ProtocolError(
                "invalid_value", "session.type: this server transcribes only (type transcription)", "session.type"
            )
        audio_input = _object(_object(session.get("audio"), "session.audio").get("input"), "session.audio.input")
        _format(audio_input.get("format"), "session.audio.input.format")
        config = _transcription(audio_input.get("transcription"), "session.audio.input.transcription", config)
        if "turn_detection" in audio_input:
            config = replace(
                config,
                turn_detection=_turn_detection(
                    audio_input["turn_detection"], "session.audio.input.turn_detection", config.turn_detection
                ),
            )
    if session.get("identify_speakers") is not None:
        config = replace(config, identify_speakers=bool(session["identify_speakers"]))
    return config


def parse(raw: str, config: LiveConfig) -> ClientEvent:
    """One client event; ProtocolError when it is malformed, too large or not supported."""
    if len(raw) > MAX_EVENT_BYTES:
        raise ProtocolError(
            "event_too_large", f"An event may be at most {MAX_EVENT_BYTES // 1024} KiB; send audio in smaller appends"
        )
    try:
        event = json.loads(raw)
    except ValueError:
        raise ProtocolError("invalid_json", "Every event must be one JSON object") from None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise ProtocolError("invalid_event", "Every event must be a JSON object with a `type`")
    match event["type"]:
        case "input_audio_buffer.append":
            audio = event.get("audio")
            if not isinstance(audio, str):
                raise ProtocolError("invalid_value", "audio: base64 of 16-bit PCM", "audio")
            try:
                pcm = base64.b64decode(audio, validate=True)
            except (binascii.Error, ValueError):
                raise ProtocolError("invalid_value", "audio: not valid base64", "audio") from None
            if len(pcm) % 2:
                raise ProtocolError("invalid_value", "audio: 16-bit PCM has an even number of bytes", "audio")
            return Append(pcm)
        case "input_audio_buffer.commit":
            return Commit()
        case "input_audio_buffer.clear":
            return Clear()
        case "session.update" | "transcription_session.update" as kind:
            beta = kind == "transcription_session.update"
            return Update(_session(_object(event.get("session"), "session"), beta, config), beta)
        case other:
            raise ProtocolError(
                "unsupported_event",
                f"{other[:60]!r} is not an event of the transcription protocol; this server takes session.update, "
                "input_audio_buffer.append, .commit and .clear",
            )


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def server_event(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "event_id": new_id("event"), **fields}


def error_event(code: str, message: str, param: str | None = None) -> dict[str, Any]:
    error = {"type": "invalid_request_error", "code": code, "message": message, "param": param}
    return server_event("error", error=error)


def session_document(session_id: str, config: LiveConfig) -> dict[str, Any]:
    """The session as `session.created` and `session.updated` describe it (GA shape)."""
    vad = config.turn_detection
    turn_detection = None if vad is None else {"type": "server_vad", **vad.__dict__}
    return {
        "type": "transcription",
        "id": session_id,
        "object": "realtime.transcription_session",
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": INPUT_RATE},
                "transcription": {"model": config.model, "language": config.language, "prompt": config.prompt},
                "turn_detection": turn_detection,
            }
        },
    }
