"""`stream=true` on POST /v1/audio/transcriptions, read by the official `openai` package against a live server."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import API_KEY, AUTH, wait_until
from tests.fakes import FAKE_LONG_TEXT, FAKE_TEXT

FULL_TEXT = f"{FAKE_TEXT} {FAKE_LONG_TEXT}"


def _sdk(port: int) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY, max_retries=0, timeout=30)


def _tasks(port: int) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = httpx.get(f"http://127.0.0.1:{port}/api/v1/transcribe/tasks", headers=AUTH).json()[
        "tasks"
    ]
    return tasks


def test_deltas_arrive_while_transcribing_then_done(live_server: Callable[..., int], short_speech: Path) -> None:
    # Slow steps: the whole fake run takes about 5 s, its first text comes at the first transcription step.
    port = live_server({"FAKE_STEP_SECONDS": "0.2"})
    events = []
    with short_speech.open("rb") as audio:
        stream = _sdk(port).audio.transcriptions.create(model="whisper-1", file=audio, stream=True)
        for event in stream:
            if not events:
                # The first piece of text came while the task was still being transcribed, not at its end.
                assert [(task["status"], task["message"]) for task in _tasks(port)] == [
                    ("processing", "Transcribing speech")
                ]
            events.append(event)
    assert [event.type for event in events] == ["transcript.text.delta"] * 2 + ["transcript.text.done"]
    assert [event.delta for event in events[:2]] == [FAKE_TEXT, f" {FAKE_LONG_TEXT}"]  # type: ignore[union-attr]
    assert events[-1].text == FULL_TEXT  # type: ignore[union-attr]
    # Streamed or not, the task is gone once answered.
    wait_until(lambda: _tasks(port) == [])


def test_diarized_segments_come_with_their_speakers_before_done(
    live_server: Callable[..., int], short_speech: Path
) -> None:
    port = live_server()
    with short_speech.open("rb") as audio:
        events = list(
            _sdk(port).audio.transcriptions.create(
                model="gpt-4o-transcribe-diarize", file=audio, response_format="diarized_json", stream=True
            )
        )
    kinds = [event.type for event in events]
    assert kinds == ["transcript.text.delta"] * 2 + ["transcript.text.segment"] * 2 + ["transcript.text.done"]
    segments = [event for event in events if event.type == "transcript.text.segment"]
    assert [(segment.id, segment.speaker, segment.text, segment.start) for segment in segments] == [
        ("seg_0", "SPEAKER_00", FAKE_TEXT, 0.0),
        ("seg_1", "SPEAKER_01", FAKE_LONG_TEXT, 3.0),
    ]


def test_a_failure_mid_stream_is_an_error_event(live_server: Callable[..., int], short_speech: Path) -> None:
    port = live_server({"FAKE_MODE": "fail"})
    received = []
    with short_speech.open("rb") as audio:
        stream = _sdk(port).audio.transcriptions.create(model="whisper-1", file=audio, stream=True)
        with pytest.raises(openai.APIError) as raised:
            received.extend(event.type for event in stream)
    # The text came, then the failure as an event the SDK raises: the stream was not cut.
    assert received == ["transcript.text.delta"] * 2
    assert "The fake pipeline was told to fail." in str(raised.value)

    # The same as raw Server-Sent Events.
    with short_speech.open("rb") as audio:
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/audio/transcriptions", headers=AUTH, timeout=30,
            files={"file": audio}, data={"model": "whisper-1", "stream": "true"},
        )  # fmt: skip
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    last = [line for line in response.text.splitlines() if line.startswith("data: ")][-1]
    assert json.loads(last.removeprefix("data: "))["error"]["code"] == "transcription_failed"


NOT_AUDIO = "data:audio/wav;base64," + base64.b64encode(b"these are not sounds").decode()
REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"stream": "true", "response_format": "srt"}, "use response_format json, text or diarized_json"),
    ({"known_speaker_names[]": ["Alice"]}, "give one reference recording for each name"),
    (
        {"known_speaker_names[]": ["Alice"], "known_speaker_references[]": ["data:audio/wav;base64,AAAA"]},
        "only with response_format=diarized_json",
    ),
    (
        {
            "response_format": "diarized_json",
            "known_speaker_names[]": ["Alice"],
            "known_speaker_references[]": ["https://example.com/alice.wav"],
        },
        "known_speaker_references[0]: give the sample as a data URL",
    ),
    (
        {
            "response_format": "diarized_json",
            "known_speaker_names[]": ["Alice"],
            "known_speaker_references[]": ["data:audio/wav;base64,not base64!"],
        },
        "known_speaker_references[0]: the data URL's base64 is malformed",
    ),
    (
        {
            "response_format": "diarized_json",
            "known_speaker_names[]": ["A", "B", "C", "D", "E"],
            "known_speaker_references[]": ["data:audio/wav;base64,AAAA"] * 5,
        },
        "known_speaker_names[]: List should have at most 4 items",
    ),
    (
        {
            "response_format": "diarized_json",
            "known_speaker_names[]": ["Alice"],
            "known_speaker_references[]": [NOT_AUDIO],
        },
        "known_speaker_references[0] (Alice): ",
    ),
]


def test_stream_and_known_speakers_are_checked(client: TestClient, short_speech: Path) -> None:
    for form, reason in REFUSED:
        with short_speech.open("rb") as audio:
            response = client.post(
                "/v1/audio/transcriptions", headers=AUTH, files={"file": audio}, data={"model": "whisper-1", **form}
            )
        assert response.status_code == 422, (form, response.text)
        assert reason in response.json()["detail"], form
    assert list(client.app.state.settings.upload_dir.iterdir()) == []  # type: ignore[attr-defined]
