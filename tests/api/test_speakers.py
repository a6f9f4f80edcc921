"""Enrolled voices and speaker names through the HTTP API, on the FakePipeline.

The fake gives each speaker a voiceprint that varies a little with the recording (tests/fakes.py), so
a voice enrolled from one recording is named in another by the service's real matching and storage
code, with a score below 1; real voices are in tests/real/test_speakers.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.voices.matching import threshold_for
from tests.api.conftest import AUTH, upload, wait_for_status, wait_until
from tests.conftest import speak
from tests.fakes import FAKE_ENCODER

OTHER = {"X-API-Key": "second-key"}
THRESHOLD = threshold_for(FAKE_ENCODER)


@pytest.fixture(scope="module")
def other_speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another recording than short_speech, of other words: the fake's speakers sound a little different in it."""
    return speak("A different sentence, recorded on another day.", tmp_path_factory.mktemp("other") / "other.wav")


def _finished(client: TestClient, audio: Path, **form: Any) -> dict[str, Any]:
    task_id = upload(client, audio, **form)["task_id"]
    doc = wait_for_status(client, task_id, {"completed", "failed"})
    assert doc["status"] == "completed", doc
    return doc


def _enrol(client: TestClient, name: str, task_id: str, speaker: str, headers: dict[str, str] = AUTH) -> Any:
    return client.post("/api/v1/speakers", headers=headers, data={"name": name, "task_id": task_id, "speaker": speaker})


def _speakers_of(result: dict[str, Any]) -> tuple[set[str], set[str]]:
    segments = {segment["speaker"] for segment in result["segments"]}
    words = {word["speaker"] for segment in result["segments"] for word in segment["words"]}
    return segments, words


def test_a_voice_enrolled_from_a_task_names_that_speaker_in_later_tasks(
    client: TestClient, short_speech: Path, other_speech: Path
) -> None:
    first = _finished(client, short_speech)
    enrolled = _enrol(client, "Alice", first["task_id"], "SPEAKER_00")
    assert enrolled.status_code == 201, enrolled.text
    voice = enrolled.json()
    assert voice["name"] == "Alice"
    assert voice["samples"] == 1
    assert "embedding" not in voice
    assert "voiceprints" not in first["result"]  # kept with the task, never shown

    listed = client.get("/api/v1/speakers", headers=AUTH).json()["speakers"]
    assert [v["id"] for v in listed] == [voice["id"]]

    # Another recording: Alice's voiceprint there is close to the enrolled one, not the same.
    result = _finished(client, other_speech, identify_speakers="true")["result"]
    assert _speakers_of(result) == ({"Alice", "SPEAKER_01"}, {"Alice", "SPEAKER_01"})
    by_label = {entry["label"]: entry for entry in result["speakers"]}
    assert by_label["SPEAKER_00"]["speaker"] == "Alice"
    assert THRESHOLD <= by_label["SPEAKER_00"]["score"] < 0.99
    assert by_label["SPEAKER_01"]["speaker"] == "SPEAKER_01"
    assert by_label["SPEAKER_01"]["score"] < THRESHOLD

    # Without the option, nothing is named; with a list, only those voices are considered.
    plain = _finished(client, short_speech)["result"]
    assert _speakers_of(plain)[0] == {"SPEAKER_00", "SPEAKER_01"}
    assert _enrol(client, "Bob", first["task_id"], "SPEAKER_01").status_code == 201
    only_bob = _finished(client, other_speech, identify_speakers='["Bob"]')["result"]
    assert _speakers_of(only_bob)[0] == {"SPEAKER_00", "Bob"}


def test_adding_a_sample_counts_it(client: TestClient, short_speech: Path) -> None:
    task = _finished(client, short_speech)
    voice = _enrol(client, "Alice", task["task_id"], "SPEAKER_00").json()
    added = client.post(
        f"/api/v1/speakers/{voice['id']}/samples",
        headers=AUTH,
        data={"task_id": task["task_id"], "speaker": "SPEAKER_00"},
    )
    assert added.status_code == 200, added.text
    assert added.json()["samples"] == 2


def test_voices_are_invisible_to_other_keys(client: TestClient, short_speech: Path) -> None:
    task = _finished(client, short_speech)
    voice = _enrol(client, "Alice", task["task_id"], "SPEAKER_00").json()

    assert client.get("/api/v1/speakers", headers=OTHER).json() == {"speakers": []}
    assert client.delete(f"/api/v1/speakers/{voice['id']}", headers=OTHER).status_code == 404
    sample = client.post(
        f"/api/v1/speakers/{voice['id']}/samples",
        headers=OTHER,
        data={"task_id": task["task_id"], "speaker": "SPEAKER_00"},
    )
    assert sample.status_code == 404
    assert _enrol(client, "Mine now", task["task_id"], "SPEAKER_00", headers=OTHER).status_code == 404
    assert client.delete("/api/v1/speakers", headers=OTHER).json() == {"deleted": 0}
    with short_speech.open("rb") as audio:
        named = client.post(
            "/api/v1/transcribe/upload", headers=OTHER, files={"file": audio}, data={"identify_speakers": "Alice"}
        )
    assert named.status_code == 422
    assert "no voice named 'Alice'" in named.json()["detail"]
    # The other key's tasks never take the name, even when it asks for every voice it has.
    with short_speech.open("rb") as audio:
        other_task = client.post(
            "/api/v1/transcribe/upload", headers=OTHER, files={"file": audio}, data={"identify_speakers": "true"}
        ).json()["task_id"]
    other_result = wait_until(
        lambda: client.get(f"/api/v1/transcribe/status/{other_task}", headers=OTHER).json()["result"]
    )
    assert _speakers_of(other_result)[0] == {"SPEAKER_00", "SPEAKER_01"}
    rename = client.patch(
        f"/api/v1/transcribe/tasks/{task['task_id']}/speakers", headers=OTHER, json={"SPEAKER_00": "X"}
    )
    assert rename.status_code == 404
    assert [v["name"] for v in client.get("/api/v1/speakers", headers=AUTH).json()["speakers"]] == ["Alice"]


def test_deleting_voices(client: TestClient, short_speech: Path, other_speech: Path) -> None:
    task = _finished(client, short_speech)
    alice = _enrol(client, "Alice", task["task_id"], "SPEAKER_00").json()
    _enrol(client, "Bob", task["task_id"], "SPEAKER_01")

    assert client.delete(f"/api/v1/speakers/{alice['id']}", headers=AUTH).status_code == 200
    assert client.delete(f"/api/v1/speakers/{alice['id']}", headers=AUTH).status_code == 404
    result = _finished(client, other_speech, identify_speakers="true")["result"]
    assert _speakers_of(result)[0] == {"SPEAKER_00", "Bob"}
    assert client.delete("/api/v1/speakers", headers=AUTH).json() == {"deleted": 1}
    assert client.get("/api/v1/speakers", headers=AUTH).json() == {"speakers": []}


@pytest.mark.parametrize(
    ("form", "status", "message"),
    [
        ({"name": "Alice"}, 422, "give a recording of the voice as file, or task_id and speaker"),
        ({"name": "Alice", "task_id": "TASK"}, 422, "speaker: give the speaker's label"),
        ({"name": "Alice", "task_id": "TASK", "speaker": "SPEAKER_09"}, 422, "has no speaker 'SPEAKER_09'"),
        ({"name": "Alice", "task_id": "no-such-task", "speaker": "SPEAKER_00"}, 404, "No task with id"),
        ({"name": "  ", "task_id": "TASK", "speaker": "SPEAKER_00"}, 422, "name: give a name of 1 to 100 characters"),
    ],
)
def test_enrolment_mistakes_are_explained(
    client: TestClient, short_speech: Path, form: dict[str, str], status: int, message: str
) -> None:
    task_id = _finished(client, short_speech)["task_id"]
    response = client.post(
        "/api/v1/speakers", headers=AUTH, data={key: value.replace("TASK", task_id) for key, value in form.items()}
    )
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


def test_a_name_is_enrolled_once_and_needs_a_diarized_task(client: TestClient, short_speech: Path) -> None:
    task_id = _finished(client, short_speech)["task_id"]
    assert _enrol(client, "Alice", task_id, "SPEAKER_00").status_code == 201
    again = _enrol(client, "Alice", task_id, "SPEAKER_01")
    assert again.status_code == 409
    assert "/samples" in again.json()["detail"]

    undiarized = _finished(client, short_speech, enable_diarization="false")["task_id"]
    response = _enrol(client, "Bob", undiarized, "SPEAKER_00")
    assert response.status_code == 409
    assert "no speaker embeddings" in response.json()["detail"]


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"identify_speakers": "true", "enable_diarization": "false"}, "keep enable_diarization on"),
        ({"identify_speakers": '["Alice"'}, 'give true, or names as "Alice, Bob"'),
        ({"identify_speakers": "Nobody"}, "no voice named 'Nobody'"),
    ],
)
def test_identify_speakers_mistakes_are_explained(
    client: TestClient, short_speech: Path, form: dict[str, str], message: str
) -> None:
    with short_speech.open("rb") as audio:
        response = client.post("/api/v1/transcribe/upload", headers=AUTH, files={"file": audio}, data=form)
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]


def test_a_sample_with_too_little_speech_is_refused(client: TestClient, tmp_path: Path) -> None:
    tone = tmp_path / "tone.wav"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=5", str(tone)], check=True
    )
    with tone.open("rb") as audio:
        response = client.post("/api/v1/speakers", headers=AUTH, files={"file": audio}, data={"name": "Alice"})
    assert response.status_code == 422, response.text
    assert "0.0 s of speech; a voice needs at least 3 s" in response.json()["detail"]
    assert not any((tmp_path / "uploads").iterdir())  # the sample is not kept


def test_renaming_a_speaker_changes_the_result_and_its_exports(client: TestClient, short_speech: Path) -> None:
    task_id = _finished(client, short_speech)["task_id"]
    url = f"/api/v1/transcribe/tasks/{task_id}/speakers"
    renamed = client.patch(url, headers=AUTH, json={"SPEAKER_00": "Alice"})
    assert renamed.status_code == 200, renamed.text
    assert _speakers_of(renamed.json())[0] == {"Alice", "SPEAKER_01"}

    result = client.get(f"/api/v1/transcribe/result/{task_id}", headers=AUTH).json()
    assert _speakers_of(result) == ({"Alice", "SPEAKER_01"}, {"Alice", "SPEAKER_01"})
    srt = client.get(f"/api/v1/transcribe/result/{task_id}?format=srt", headers=AUTH).text
    assert "[Alice]" in srt
    assert "SPEAKER_00" not in srt
    for fmt in ("vtt", "txt", "tsv"):
        assert "Alice" in client.get(f"/api/v1/transcribe/result/{task_id}?format={fmt}", headers=AUTH).text

    # Renamed speakers are still enrolled by either name.
    assert _enrol(client, "Alice", task_id, "Alice").status_code == 201
    assert _enrol(client, "Someone", task_id, "SPEAKER_01").status_code == 201

    unknown = client.patch(url, headers=AUTH, json={"SPEAKER_00": "Bob"})
    assert unknown.status_code == 422
    assert "its speakers: Alice, SPEAKER_01" in unknown.json()["detail"]
    clash = client.patch(url, headers=AUTH, json={"SPEAKER_01": "Alice"})
    assert clash.status_code == 422
    assert "share a name" in clash.json()["detail"]
    assert client.patch(url, headers=AUTH, json={"Alice": "Alicia"}).status_code == 200
