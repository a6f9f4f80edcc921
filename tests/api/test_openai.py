"""POST /v1/audio/transcriptions, driven by the official `openai` package against a live server."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest
import srt
import webvtt
from fastapi.testclient import TestClient

from tests.api.conftest import API_KEY, AUTH, wait_until
from tests.fakes import FAKE_LONG_TEXT, FAKE_TEXT

FULL_TEXT = f"{FAKE_TEXT} {FAKE_LONG_TEXT}"


def _sdk(port: int, key: str = API_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=30)


def _queue(port: int) -> dict[str, int]:
    queue: dict[str, int] = httpx.get(f"http://127.0.0.1:{port}/health", headers=AUTH).json()["queue"]
    return queue


@pytest.fixture
def port(live_server: Callable[..., int]) -> int:
    return live_server()


def test_json_and_text(port: int, short_speech: Path) -> None:
    sdk = _sdk(port)
    with short_speech.open("rb") as audio:
        transcription = sdk.audio.transcriptions.create(model="whisper-1", file=audio, language="en")
    assert transcription.text == FULL_TEXT
    with short_speech.open("rb") as audio:
        text = sdk.audio.transcriptions.create(model="whisper-1", file=audio, response_format="text")
    assert text.strip() == FULL_TEXT
    # Synchronous: once answered, the task is gone.
    assert _queue(port) == {"pending": 0, "processing": 0}


def test_verbose_json_with_words_and_segments(port: int, short_speech: Path) -> None:
    with short_speech.open("rb") as audio:
        verbose = _sdk(port).audio.transcriptions.create(
            model="whisper-1",
            file=audio,
            language="en",
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
        )
    assert verbose.language == "english"
    assert verbose.text == FULL_TEXT
    assert verbose.duration == pytest.approx(2.0, abs=1.0)  # the clip's probed length
    assert verbose.segments is not None
    assert [segment.text for segment in verbose.segments] == [FAKE_TEXT, FAKE_LONG_TEXT]
    assert verbose.segments[1].start == 3.0
    assert verbose.words is not None
    assert [word.word for word in verbose.words] == FULL_TEXT.split()
    assert (verbose.words[0].start, verbose.words[0].end) == (0.0, 0.5)

    with short_speech.open("rb") as audio:
        segments_only = _sdk(port).audio.transcriptions.create(
            model="whisper-1", file=audio, response_format="verbose_json"
        )
    assert segments_only.segments is not None
    assert segments_only.words is None


def test_subtitles(port: int, short_speech: Path) -> None:
    with short_speech.open("rb") as audio:
        subtitles = _sdk(port).audio.transcriptions.create(model="whisper-1", file=audio, response_format="srt")
    cues = list(srt.parse(subtitles))
    assert cues[0].content == FAKE_TEXT  # no diarization on the OpenAI path unless asked
    with short_speech.open("rb") as audio:
        vtt = _sdk(port).audio.transcriptions.create(model="whisper-1", file=audio, response_format="vtt")
    assert webvtt.from_string(vtt).captions[0].text == FAKE_TEXT


def test_diarized_json_labels_speakers(port: int, short_speech: Path) -> None:
    with short_speech.open("rb") as audio:
        diarized = _sdk(port).audio.transcriptions.create(
            model="gpt-4o-transcribe-diarize", file=audio, response_format="diarized_json"
        )
    assert [(segment.speaker, segment.text) for segment in diarized.segments] == [
        ("SPEAKER_00", FAKE_TEXT),
        ("SPEAKER_01", FAKE_LONG_TEXT),
    ]
    assert diarized.segments[0].type == "transcript.text.segment"
    assert diarized.usage is not None


def test_errors_reach_the_sdk_as_its_exceptions_with_the_reason(port: int, short_speech: Path, tmp_path: Path) -> None:
    # The SDK's exception message is "Error code: N - " and the `error.message` the server gave.
    with short_speech.open("rb") as audio, pytest.raises(openai.AuthenticationError) as unauthorized:
        _sdk(port, key="wrong").audio.transcriptions.create(model="whisper-1", file=audio)
    assert str(unauthorized.value).startswith("Error code: 401 - Invalid API key")
    assert unauthorized.value.code == "invalid_api_key"
    not_audio = tmp_path / "notes.mp3"
    not_audio.write_text("these are not sounds")
    with not_audio.open("rb") as audio, pytest.raises(openai.APIStatusError) as raised:
        _sdk(port).audio.transcriptions.create(model="whisper-1", file=audio)
    assert raised.value.status_code == 415
    assert "Supported formats" in str(raised.value)
    assert (raised.value.type, raised.value.code) == ("invalid_request_error", "unsupported_file")
    with short_speech.open("rb") as audio, pytest.raises(openai.UnprocessableEntityError) as unprocessable:
        _sdk(port).audio.transcriptions.create(
            model="whisper-1", file=audio, response_format="json", timestamp_granularities=["word"]
        )
    assert "needs response_format=verbose_json" in str(unprocessable.value)
    with short_speech.open("rb") as audio, pytest.raises(openai.UnprocessableEntityError) as unprocessable:
        _sdk(port).audio.transcriptions.create(model="whisper-1", file=audio, language="klingon")
    assert "is not a language Whisper knows" in str(unprocessable.value)


def test_v1_errors_stay_problem_documents_with_an_openai_error(client: TestClient) -> None:
    response = client.post("/v1/audio/transcriptions", headers=AUTH, data={"model": "whisper-1"})
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["error"] == {"message": body["detail"], "type": "invalid_request_error", "param": None, "code": None}
    # Other routes keep the plain problem document.
    assert "error" not in client.get("/api/v1/transcribe/status/nothing", headers=AUTH).json()


def test_a_failed_transcription_is_a_422_with_the_reason(live_server: Callable[..., int], short_speech: Path) -> None:
    port = live_server({"FAKE_MODE": "fail"})
    with short_speech.open("rb") as audio, pytest.raises(openai.UnprocessableEntityError) as raised:
        _sdk(port).audio.transcriptions.create(model="whisper-1", file=audio)
    assert "The fake pipeline was told to fail." in str(raised.value)


def test_a_worker_crash_is_a_server_error_with_the_reason(
    make_client: Callable[..., TestClient], short_speech: Path
) -> None:
    """Not 422: the input was fine, the server failed it."""
    client = make_client({"FAKE_MODE": "crash"})
    with short_speech.open("rb") as audio:
        answer = client.post(
            "/v1/audio/transcriptions", headers=AUTH, files={"file": ("a.wav", audio)}, data={"model": "whisper-1"}
        )
    assert answer.status_code == 500, answer.text
    assert "worker process stopped unexpectedly" in answer.json()["error"]["message"]


def test_shares_the_queue_and_cap_with_uploads(live_server: Callable[..., int], short_speech: Path) -> None:
    port = live_server({"FAKE_STEP_SECONDS": "0.04"}, max_concurrent_tasks=1)
    with short_speech.open("rb") as audio:
        queued = httpx.post(f"http://127.0.0.1:{port}/api/v1/transcribe/upload", headers=AUTH, files={"file": audio})
    first = queued.json()["task_id"]
    with short_speech.open("rb") as audio:
        _sdk(port).audio.transcriptions.create(model="whisper-1", file=audio)
    # One slot: the OpenAI request waited for the upload before it, which is done by now.
    status = httpx.get(f"http://127.0.0.1:{port}/api/v1/transcribe/status/{first}", headers=AUTH).json()
    assert status["status"] == "completed"


def test_a_client_that_hangs_up_stops_its_transcription(
    live_server: Callable[..., int], short_speech: Path, tmp_path: Path
) -> None:
    port = live_server({"FAKE_STEP_SECONDS": "0.3"})
    outcome: list[BaseException] = []

    def impatient() -> None:
        with short_speech.open("rb") as audio:
            try:
                _sdk(port).with_options(timeout=1.5).audio.transcriptions.create(model="whisper-1", file=audio)
            except openai.APITimeoutError as error:
                outcome.append(error)

    thread = threading.Thread(target=impatient)
    thread.start()
    wait_until(lambda: _queue(port)["processing"] == 1)
    thread.join()
    assert outcome, "the client gave up"
    # The full fake run takes 7.5 s; the server stops it soon after the hang-up.
    wait_until(lambda: _queue(port) == {"pending": 0, "processing": 0}, timeout=4)
    assert list((tmp_path / "uploads").iterdir()) == []


def test_translations_run_the_translate_task(port: int, short_speech: Path) -> None:
    sdk = _sdk(port)
    with short_speech.open("rb") as audio:
        translation = sdk.audio.translations.create(model="whisper-1", file=audio, prompt="Minutes.")
    assert translation.text == FULL_TEXT
    with short_speech.open("rb") as audio:
        verbose = sdk.audio.translations.create(model="whisper-1", file=audio, response_format="verbose_json")
    assert verbose.model_extra is not None
    assert verbose.model_extra["task"] == "translate"
    with short_speech.open("rb") as audio:
        transcribed = sdk.audio.transcriptions.create(model="whisper-1", file=audio, response_format="verbose_json")
    assert transcribed.model_extra is not None
    assert transcribed.model_extra["task"] == "transcribe"


def test_translations_are_refused_on_an_english_only_model(live_server: Callable[..., int], short_speech: Path) -> None:
    port = live_server({"FAKE_ENGLISH_ONLY": "1"})
    with short_speech.open("rb") as audio, pytest.raises(openai.UnprocessableEntityError) as raised:
        _sdk(port).audio.translations.create(model="whisper-1", file=audio)
    assert "is English-only and cannot translate" in str(raised.value)


def test_multilingual_is_read_from_both_forms(port: int, short_speech: Path) -> None:
    sdk = _sdk(port)
    for create in (sdk.audio.transcriptions.create, sdk.audio.translations.create):
        with short_speech.open("rb") as audio:
            assert create(model="whisper-1", file=audio, extra_body={"multilingual": True}).text == FULL_TEXT
    with short_speech.open("rb") as audio, pytest.raises(openai.UnprocessableEntityError) as raised:
        sdk.audio.transcriptions.create(model="whisper-1", file=audio, language="en", extra_body={"multilingual": True})
    assert "multilingual: detects the language" in str(raised.value)
