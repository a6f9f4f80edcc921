"""/v1/realtime?intent=transcription on the FakeLiveEngine: the protocol as the official `openai` SDK's
realtime client speaks it, the checks at the upgrade, and the sessions' bounds."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import uvicorn
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from app.client import main as client_main
from app.main import create_app
from tests.api.conftest import API_KEY, make_settings, wait_until
from tests.fakes import FAKE_LIVE_WORDS, FakeLiveEngine, FakePipeline

RATE = 24000


def _tone(seconds: float, frequency: float) -> np.ndarray:
    times = np.arange(round(seconds * RATE)) / RATE
    return 0.3 * np.sin(2 * np.pi * frequency * times)


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE))


def _chunks(audio: np.ndarray, seconds: float = 0.2) -> Iterator[str]:
    pcm = (audio * 32767).astype("<i2").tobytes()
    step = round(seconds * RATE) * 2
    for start in range(0, len(pcm), step):
        yield base64.b64encode(pcm[start : start + step]).decode()


@pytest.fixture
def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., int]]:
    """The service with the fake live engine under uvicorn on a loopback port."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(fake_env: dict[str, str] | None = None, **settings: Any) -> int:
        from tests.conftest import free_port

        for name, value in (fake_env or {}).items():
            monkeypatch.setenv(name, value)
        app = create_app(make_settings(tmp_path, **settings), FakePipeline, FakeLiveEngine)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        wait_until(lambda: server.started)
        return port

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


def _url(port: int, query: str = "intent=transcription") -> str:
    return f"ws://127.0.0.1:{port}/v1/realtime?{query}"


def _events_until(connection: ClientConnection, last: str, limit: int = 200) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while not events or events[-1]["type"] != last:
        events.append(json.loads(connection.recv(timeout=20)))
        assert len(events) < limit, events
    return events


def test_the_sdk_streams_two_voices_and_gets_partials_finals_and_speakers(live: Callable[..., int]) -> None:
    port = live()
    client = openai.OpenAI(
        api_key=API_KEY, base_url=f"http://127.0.0.1:{port}/v1", websocket_base_url=f"ws://127.0.0.1:{port}/v1"
    )
    # Two "voices" (a low and a high tone), 2.5 s each, a second of silence after each.
    audio = np.concatenate([_tone(2.5, 220), _silence(1.0), _tone(2.5, 660), _silence(1.0)])
    with client.realtime.connect(extra_query={"intent": "transcription"}) as connection:
        assert connection.recv().type == "session.created"
        connection.session.update(
            session={
                "type": "transcription",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "transcription": {"model": "whisper-1", "language": "en"},
                        "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                                           "silence_duration_ms": 500},
                    }
                },
            }
        )  # fmt: skip
        # The service skips partials while more than PARTIAL_SECONDS of a client's audio waits (they would
        # be stale when sent): the first chunk waits for the live worker to start, the rest go at four
        # times real time (this test is not about timing).
        first, *rest = _chunks(audio)
        connection.input_audio_buffer.append(audio=first)
        events = []
        while not events or events[-1].type != "input_audio_buffer.speech_started":
            events.append(connection.recv())
        for chunk in rest:
            connection.input_audio_buffer.append(audio=chunk)
            time.sleep(0.05)
        while sum(event.type.endswith(".completed") for event in events) < 2:
            events.append(connection.recv())
    kinds = [event.type for event in events]
    assert kinds[0] == "session.updated"
    completed = [event for event in events if event.type == "conversation.item.input_audio_transcription.completed"]
    # Each turn: started, partial deltas while it is spoken, stopped, committed, then its final text.
    for final in completed:
        mine = [event.type for event in events if getattr(event, "item_id", None) == final.item_id]
        assert mine[0] == "input_audio_buffer.speech_started"
        assert mine[-3:] == [
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "conversation.item.input_audio_transcription.completed",
        ]
        deltas = [event.delta for event in events if event.type.endswith(".delta") and event.item_id == final.item_id]
        assert len(deltas) >= 2
        assert final.transcript.startswith("".join(deltas))  # deltas only append to what was said
        assert final.transcript.split() == FAKE_LIVE_WORDS[: len(final.transcript.split())]
    speakers = [final.model_extra["speaker"] for final in completed]  # type: ignore[index]
    assert speakers == ["SPEAKER_00", "SPEAKER_01"]


def test_refusals_at_the_upgrade(live: Callable[..., int]) -> None:
    port = live(max_live_sessions_per_key=1)
    refusals = {
        "no key": ({}, None, "intent=transcription"),
        "wrong key": ({"Authorization": "Bearer wrong"}, None, "intent=transcription"),
        "wrong key as a subprotocol": ({}, ["realtime", "openai-insecure-api-key.wrong"], "intent=transcription"),
        "key in the URL": ({"Authorization": f"Bearer {API_KEY}"}, None, f"intent=transcription&api_key={API_KEY}"),
        "no intent": ({"X-API-Key": API_KEY}, None, ""),
    }
    for case, (headers, subprotocols, query) in refusals.items():
        with pytest.raises(InvalidStatus) as refused:
            connect(_url(port, query), additional_headers=headers, subprotocols=subprotocols)
        status = refused.value.response.status_code
        assert status == (400 if case == "no intent" else 401), case
        assert json.loads(refused.value.response.body)["detail"], case
    # A browser's way: the key as a subprotocol; "realtime" is the one accepted.
    with connect(_url(port), subprotocols=["realtime", f"openai-insecure-api-key.{API_KEY}"]) as browser:  # type: ignore[list-item]
        assert browser.subprotocol == "realtime"
        assert json.loads(browser.recv(timeout=20))["type"] == "session.created"
        # One session per key (MAX_LIVE_SESSIONS_PER_KEY=1): the next is refused at the upgrade.
        with pytest.raises(InvalidStatus) as capped:
            connect(_url(port), additional_headers={"X-API-Key": API_KEY})
        assert capped.value.response.status_code == 429
        assert "MAX_LIVE_SESSIONS_PER_KEY" in json.loads(capped.value.response.body)["detail"]
    # Closed sessions free their place.
    wait_until(lambda: _opens(port))


def _opens(port: int) -> bool:
    try:
        with connect(_url(port), additional_headers={"X-API-Key": API_KEY}) as again:
            return bool(json.loads(again.recv(timeout=20))["type"] == "session.created")
    except InvalidStatus:
        return False


BAD_EVENTS: list[tuple[str | bytes, str]] = [
    ("{not json", "invalid_json"),
    (json.dumps({"type": "input_audio_buffer.append", "audio": "A" * (1100 * 1024)}), "event_too_large"),
    (json.dumps({"type": "response.create"}), "unsupported_event"),
    (json.dumps({"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/pcmu"}}}}}),
     "invalid_value"),
    (b"\x00\x01", "invalid_event"),
]  # fmt: skip


def test_bad_events_end_the_session_with_an_error_event(live: Callable[..., int]) -> None:
    port = live(max_live_sessions_per_key=len(BAD_EVENTS))
    for message, code in BAD_EVENTS:
        with connect(_url(port), additional_headers={"X-API-Key": API_KEY}, max_size=None) as connection:
            assert json.loads(connection.recv(timeout=20))["type"] == "session.created"
            connection.send(message)
            events = _until_closed(connection)
        assert [event["error"]["code"] for event in events if event["type"] == "error"] == [code]
        assert connection.close_code == 1008, code


def _until_closed(connection: ClientConnection) -> list[dict[str, Any]]:
    """Every event the server sends until it closes the connection."""
    events = []
    try:
        while True:
            events.append(json.loads(connection.recv(timeout=20)))
    except ConnectionClosed:
        return events


def test_audio_faster_than_it_can_be_transcribed_ends_the_session(live: Callable[..., int]) -> None:
    # Every model call takes half a second: a minute of audio sent at once cannot be kept up with.
    port = live({"FAKE_LIVE_SECONDS": "0.5"})
    with connect(_url(port), additional_headers={"X-API-Key": API_KEY}) as connection:
        assert json.loads(connection.recv(timeout=20))["type"] == "session.created"
        try:
            for chunk in _chunks(_tone(60, 220), seconds=1.0):
                connection.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        except ConnectionClosed:
            pass  # closed by the server while this client was still sending
        errors = [event["error"]["code"] for event in _until_closed(connection) if event["type"] == "error"]
    assert errors == ["input_audio_buffer_overflow"]


def test_a_silent_client_and_an_overlong_session_are_closed(live: Callable[..., int]) -> None:
    port = live(live_idle_timeout_seconds=1.0, live_max_session_seconds=3.0, max_live_sessions_per_key=2)
    with connect(_url(port), additional_headers={"X-API-Key": API_KEY}) as silent:
        events = _until_closed(silent)
    assert [event["error"]["code"] for event in events if event["type"] == "error"] == ["idle_timeout"]
    with connect(_url(port), additional_headers={"X-API-Key": API_KEY}) as talker:
        silence = next(_chunks(_silence(0.2)))
        errors: list[str] = []
        try:
            while not errors:  # a fifth of a second of silence twice a second: never idle, for ever
                talker.send(json.dumps({"type": "input_audio_buffer.append", "audio": silence}))
                with contextlib.suppress(TimeoutError):
                    event = json.loads(talker.recv(timeout=0.5))
                    errors += [event["error"]["code"]] if event["type"] == "error" else []
        except ConnectionClosed:
            pass
        errors += [event["error"]["code"] for event in _until_closed(talker) if event["type"] == "error"]
    assert errors == ["session_expired"]


def test_the_cli_prints_each_utterance_with_its_speaker(
    live: Callable[..., int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = live()
    recording = tmp_path / "two-voices.wav"
    audio = np.concatenate([_tone(1.5, 220), _silence(1.0), _tone(1.5, 660)])  # the end: silence the CLI adds
    with wave.open(str(recording), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes((audio * 32767).astype("<i2").tobytes())
    assert client_main(["live", str(recording), "--url", f"http://127.0.0.1:{port}", "--api-key", API_KEY]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("] ")[0] for line in lines] == ["[SPEAKER_00", "[SPEAKER_01"]
    assert all(line.split("] ")[1].startswith(" ".join(FAKE_LIVE_WORDS[:3])) for line in lines), lines
