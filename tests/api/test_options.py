"""Transcription options on upload: each one validated (422 naming the field), passed to the worker, recorded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from tests.api.conftest import AUTH, upload, wait_for_status, wait_until


def _refused(client: TestClient, audio: Path, **form: str) -> str:
    response = client.post(
        "/api/v1/transcribe/upload", headers=AUTH, files={"file": ("a.wav", audio.read_bytes())}, data=form
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    detail: str = response.json()["detail"]
    return detail


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ({"task": "summarise"}, "task: Input should be 'transcribe' or 'translate'"),
        ({"beam_size": "0"}, "beam_size: Input should be greater than or equal to 1"),
        ({"beam_size": "21"}, "beam_size: Input should be less than or equal to 20"),
        ({"beam_size": "wide"}, "beam_size: Input should be a valid integer"),
        ({"temperature": "-0.1"}, "temperature: Input should be greater than or equal to 0"),
        ({"temperature": "1.5"}, "temperature: Input should be less than or equal to 1"),
        ({"temperature": "hot"}, "temperature: Input should be a valid number"),
        ({"vad_onset": "0"}, "vad_onset: Input should be greater than 0"),
        ({"vad_onset": "1"}, "vad_onset: Input should be less than 1"),
        ({"vad_offset": "1.2"}, "vad_offset: Input should be less than 1"),
        ({"vad_onset": "0.3", "vad_offset": "0.5"}, "vad_offset (0.5) cannot be larger than vad_onset (0.3)"),
        ({"vad_offset": "0.7"}, "vad_offset (0.7) cannot be larger than vad_onset (0.5, the default)"),
        ({"chunk_size": "0"}, "chunk_size: Input should be greater than or equal to 1"),
        ({"chunk_size": "31"}, "chunk_size: Input should be less than or equal to 30"),
        ({"suppress_numerals": "perhaps"}, "suppress_numerals: Input should be a valid boolean"),
        ({"return_char_alignments": "perhaps"}, "return_char_alignments: Input should be a valid boolean"),
        ({"multilingual": "perhaps"}, "multilingual: Input should be a valid boolean"),
        ({"multilingual": "true", "language": "en"}, "multilingual: detects the language of each part itself"),
        ({"initial_prompt": "x" * 2001}, "initial_prompt: String should have at most 2000 characters"),
        ({"prompt": "x" * 2001}, "prompt: String should have at most 2000 characters"),
        ({"hotwords": "x" * 2001}, "hotwords: String should have at most 2000 characters"),
        ({"prompt": "Ada", "initial_prompt": "Grace"}, "prompt: give the prompt once, as initial_prompt"),
    ],
)
def test_invalid_options_are_422_naming_the_field(
    client: TestClient, short_speech: Path, settings: Settings, form: dict[str, str], expected: str
) -> None:
    detail = _refused(client, short_speech, **form)
    assert detail.startswith(expected), detail
    assert list(settings.upload_dir.iterdir()) == [], "a refused upload leaves no file"


def test_options_reach_the_worker_and_the_result_records_them(client: TestClient, short_speech: Path) -> None:
    chosen: dict[str, Any] = {
        "initial_prompt": "Qorvath board meeting",
        "hotwords": "Qorvath",
        "beam_size": 3,
        "temperature": 0.2,
        "vad_onset": 0.6,
        "vad_offset": 0.4,
        "chunk_size": 15,
        "suppress_numerals": True,
        "return_char_alignments": True,
        "min_speakers": 1,
        "max_speakers": 2,
    }
    form = {name: str(value).lower() if isinstance(value, bool) else str(value) for name, value in chosen.items()}
    task_id = upload(client, short_speech, task="translate", language="de", **form)["task_id"]
    done = wait_for_status(client, task_id, {"completed"})
    assert done["result"]["task"] == "translate"
    assert done["result"]["language"] == "de"
    assert done["result"]["options"] == chosen


def test_defaults_are_the_seed_behaviour_and_record_no_options(client: TestClient, short_speech: Path) -> None:
    task_id = upload(client, short_speech)["task_id"]
    result = wait_for_status(client, task_id, {"completed"})["result"]
    assert result["task"] == "transcribe"
    assert result["options"] == {}
    job = client.app.state.store.engine.get(task_id).job  # type: ignore[attr-defined]
    assert (job.enable_diarization, job.initial_prompt, job.temperature, job.beam_size) == (True, None, None, None)


def test_multilingual_reaches_the_job_and_is_recorded(client: TestClient, short_speech: Path) -> None:
    task_id = upload(client, short_speech, multilingual="true")["task_id"]
    assert wait_for_status(client, task_id, {"completed"})["result"]["options"] == {"multilingual": True}
    assert client.app.state.store.engine.get(task_id).job.multilingual is True  # type: ignore[attr-defined]
    default = upload(client, short_speech)["task_id"]
    wait_for_status(client, default, {"completed"})
    assert client.app.state.store.engine.get(default).job.multilingual is False  # type: ignore[attr-defined]


def test_multilingual_is_refused_on_an_english_only_model(
    make_client: Callable[..., TestClient], short_speech: Path
) -> None:
    client = make_client({"FAKE_ENGLISH_ONLY": "1"})
    wait_until(lambda: client.get("/health", headers=AUTH).json()["model_loaded"])
    detail = _refused(client, short_speech, multilingual="true")
    assert detail.startswith("multilingual: the model fake is English-only"), detail


def test_prompt_is_the_earlier_name_of_initial_prompt(client: TestClient, short_speech: Path) -> None:
    task_id = upload(client, short_speech, prompt="Qorvath")["task_id"]
    assert wait_for_status(client, task_id, {"completed"})["result"]["options"] == {"initial_prompt": "Qorvath"}


def test_translate_is_refused_on_an_english_only_model(
    make_client: Callable[..., TestClient], short_speech: Path
) -> None:
    client = make_client({"FAKE_ENGLISH_ONLY": "1"})
    wait_until(lambda: client.get("/health", headers=AUTH).json()["model_loaded"])
    detail = _refused(client, short_speech, task="translate")
    assert detail.startswith("task: the model fake is English-only and cannot translate"), detail
    assert upload(client, short_speech, task="transcribe")["status"] == "pending"


def test_both_file_and_audio_url_is_422(client: TestClient, short_speech: Path) -> None:
    detail = _refused(client, short_speech, audio_url="https://example.com/a.wav")
    assert detail == "file: give either file (the audio itself) or audio_url (where to download it), not both"


def test_neither_file_nor_audio_url_is_422(client: TestClient) -> None:
    response = client.post("/api/v1/transcribe/upload", headers=AUTH, data={"language": "en"})
    assert response.status_code == 422
    assert response.json()["detail"] == "file: Field required (upload the audio as file, or give audio_url)"


def test_every_option_is_documented_with_its_limits(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/api/v1/transcribe/upload"]["post"]["requestBody"]["content"]["multipart/form-data"]
    name = body["schema"]["$ref"].rsplit("/", 1)[1]
    properties = schema["components"]["schemas"][name]["properties"]
    options = (
        "task", "initial_prompt", "hotwords", "beam_size", "temperature", "vad_onset", "vad_offset", "chunk_size",
        "suppress_numerals", "return_char_alignments", "audio_url", "multilingual",
    )  # fmt: skip
    for option in options:
        assert properties[option].get("description"), option
    assert "examples" in properties["initial_prompt"]
    assert "examples" in properties["audio_url"]
    assert schema["components"]["schemas"][name].get("required", []) == [], "file and every option stay optional"
