"""/v1/realtime?intent=transcription with the real live models: the official `openai` SDK's realtime
client streams an espeak-ng dialogue of two voices."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
import openai
from scipy.signal import resample_poly

from bench.diarization import make_dialogue
from tests.real.conftest import API_KEY, Server

DIALOGUE = [
    ("michael", "Has the delivery from the paper mill arrived yet?"),
    ("f4", "It came this morning, but two boxes were damaged."),
    ("michael", "Thank you. Please ask for a refund rather than new boxes."),
    ("f4", "Then I will order the rest from the shop next door."),
]
KEY_WORDS = ["delivery", "morning", "refund", "shop"]
"""A word of each turn that the live model (tiny.en) must get right; it hears some others wrong
("damaged" as "managed")."""


def _appends(audio_16k: np.ndarray, seconds: float = 0.2) -> list[str]:
    """The audio as OpenAI's input takes it: 24 kHz 16-bit PCM, base64, in appends of `seconds`."""
    pcm = (np.clip(resample_poly(audio_16k, 3, 2), -1, 1) * 32767).astype("<i2").tobytes()
    step = round(seconds * 24000) * 2
    return [base64.b64encode(pcm[start : start + step]).decode() for start in range(0, len(pcm), step)]


def test_the_sdk_streams_a_two_voice_dialogue(server: Server, tmp_path: Path) -> None:
    # A second of silence between turns, so server VAD (500 ms of silence) ends each one.
    case = make_dialogue("live-dialogue", DIALOGUE, 1.0, tmp_path)
    client = openai.OpenAI(
        api_key=API_KEY, base_url=f"{server.url}/v1", websocket_base_url=server.url.replace("http", "ws") + "/v1"
    )
    events: list[Any] = []
    with client.realtime.connect(extra_query={"intent": "transcription"}) as connection:
        connection.session.update(
            session={
                "type": "transcription",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "transcription": {"model": "whisper-1", "language": "en"},
                        "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
                    }
                },
            }
        )
        # Faster than real time (this test is not about timing), and a second of silence to end the last turn.
        for chunk in _appends(np.concatenate([case.audio, np.zeros(16000, dtype=np.float32)])):
            connection.input_audio_buffer.append(audio=chunk)
        while sum(event.type.endswith("transcription.completed") for event in events) < len(DIALOGUE):
            events.append(connection.recv())
            assert events[-1].type != "error", events[-1]
    assert any(event.type == "conversation.item.input_audio_transcription.delta" for event in events)
    finals = [event for event in events if event.type == "conversation.item.input_audio_transcription.completed"]
    for final, (_, said), word in zip(finals, DIALOGUE, KEY_WORDS, strict=True):  # in the order spoken
        assert word in final.transcript.lower(), (said, final.transcript)
    speakers = [final.model_extra["speaker"] for final in finals]
    assert speakers[0] == speakers[2]
    assert speakers[1] == speakers[3]
    assert speakers[0] != speakers[1]
