"""Bad input gets a clear 4xx with a message a person can act on, and leaves no file behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from tests.api.conftest import AUTH
from tests.conftest import ffmpeg


def _post(client: TestClient, name: str, content: bytes, **form: str) -> tuple[int, str]:
    response = client.post("/api/v1/transcribe/upload", headers=AUTH, files={"file": (name, content)}, data=form)
    assert response.headers["content-type"] == "application/problem+json", response.text
    return response.status_code, response.json()["detail"]


def test_text_file_named_mp3_is_415_listing_formats(client: TestClient, settings: Settings) -> None:
    code, detail = _post(client, "talk.mp3", b"this is plain text, not audio\n" * 50)
    assert code == 415
    assert "Supported formats: mp3, wav, m4a, flac, ogg, webm, mp4, mpeg, mpga, oga, opus" in detail
    assert list(settings.upload_dir.iterdir()) == []


def test_a_real_but_unsupported_format_is_415(client: TestClient, short_speech: Path, tmp_path: Path) -> None:
    aiff = tmp_path / "speech.aiff"
    ffmpeg("-i", str(short_speech), str(aiff))
    code, detail = _post(client, "speech.wav", aiff.read_bytes())
    assert code == 415
    assert detail.startswith("Unsupported file type (aiff)")


def test_empty_file_is_422(client: TestClient) -> None:
    assert _post(client, "empty.wav", b"") == (422, "The uploaded file is empty.")


def test_video_without_audio_is_422(client: TestClient, tmp_path: Path) -> None:
    video = tmp_path / "silent.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=duration=1:size=64x64:rate=5", "-c:v", "mpeg4", str(video))
    assert _post(client, "silent.mp4", video.read_bytes()) == (422, "The file has no audio track to transcribe.")


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ({"language": "klingon"}, "language: 'klingon' is not a language Whisper knows"),
        ({"min_speakers": "0"}, "min_speakers: Input should be greater than or equal to 1"),
        ({"max_speakers": "two"}, "max_speakers: Input should be a valid integer"),
        ({"min_speakers": "3", "max_speakers": "2"}, "min_speakers (3) cannot be larger than max_speakers (2)"),
        ({"enable_diarization": "perhaps"}, "enable_diarization: Input should be a valid boolean"),
    ],
)
def test_invalid_form_fields_are_422(
    client: TestClient, short_speech: Path, settings: Settings, form: dict[str, str], expected: str
) -> None:
    code, detail = _post(client, "speech.wav", short_speech.read_bytes(), **form)
    assert code == 422
    assert detail.startswith(expected), detail
    assert list(settings.upload_dir.iterdir()) == []


def test_missing_file_is_422(client: TestClient) -> None:
    response = client.post("/api/v1/transcribe/upload", headers=AUTH, data={"language": "en"})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("file: Field required")


@pytest.mark.parametrize(("given", "code"), [("en", "en"), ("English", "en"), (" DE ", "de"), ("", None)])
def test_language_accepts_codes_and_names(client: TestClient, short_speech: Path, given: str, code: str | None) -> None:
    response = client.post(
        "/api/v1/transcribe/upload",
        headers=AUTH,
        files={"file": ("a.wav", short_speech.read_bytes())},
        data={"language": given},
    )
    assert response.status_code == 202
    store = client.app.state.store.engine  # type: ignore[attr-defined]
    assert store.get(response.json()["task_id"]).job.language == code
