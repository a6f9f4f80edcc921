"""GET events/{id}: live progress as Server-Sent Events, read with the httpx-sse client."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from httpx_sse import connect_sse

from tests.api.conftest import AUTH, upload, wait_for_status


def _events(client: TestClient, task_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Every event of the stream, read until the server closes it."""
    with connect_sse(client, "GET", f"/api/v1/transcribe/events/{task_id}", headers=AUTH) as source:
        assert source.response.status_code == 200
        assert source.response.headers["content-type"].startswith("text/event-stream")
        return [(event.event, json.loads(event.data)) for event in source.iter_sse()]


def test_stream_follows_the_task_to_completion_and_closes(
    make_client: Callable[..., TestClient], short_speech: Path
) -> None:
    client = make_client({"FAKE_STEP_SECONDS": "0.05"})
    task_id = upload(client, short_speech)["task_id"]
    events = _events(client, task_id)
    names = [name for name, _ in events]
    assert names[0] in ("pending", "processing")
    assert names[-1] == "completed"
    assert names.count("completed") == 1
    progress = [data["progress"] for _, data in events]
    assert progress == sorted(progress)
    assert progress[-1] == 100.0
    stages = list(dict.fromkeys(data["stage"] for _, data in events if data["stage"]))
    assert stages == ["decoding", "transcribing", "aligning", "diarizing", "assigning speakers"]
    assert set(events[-1][1]) == {
        "task_id", "status", "stage", "progress", "message", "eta_seconds", "error", "warnings", "notes",
    }  # fmt: skip
    # The first task's stages have not been timed yet: no estimate rather than a guess.
    assert all(data["eta_seconds"] is None for _, data in events)
    # The next one is estimated from what they took.
    events = _events(client, upload(client, short_speech)["task_id"])
    etas = [data["eta_seconds"] for name, data in events if name == "processing" and data["stage"]]
    assert etas, "an estimate appears once progress is under way"
    assert all(isinstance(eta, float) and 0 <= eta < 10 for eta in etas), etas
    assert etas == sorted(etas, reverse=True), "the estimate counts down"
    assert events[-1][1]["eta_seconds"] is None


def test_progress_events_come_a_few_per_second_and_every_stage_is_shown(
    make_client: Callable[..., TestClient], short_speech: Path
) -> None:
    # 5 stages of 100 steps, 5 ms each: 500 progress changes in about 3 s.
    client = make_client({"FAKE_STEP_SECONDS": "0.005", "FAKE_STEPS": "100"})
    task_id = upload(client, short_speech)["task_id"]
    started = time.monotonic()
    events = _events(client, task_id)
    seconds = time.monotonic() - started
    stages = list(dict.fromkeys(data["stage"] for _, data in events if data["stage"]))
    assert stages == ["decoding", "transcribing", "aligning", "diarizing", "assigning speakers"]
    # At most 4 a second, plus one per stage change and the first and last.
    assert len(events) <= 4 * seconds + len(stages) + 2, (len(events), seconds)
    assert events[-1][0] == "completed"


def test_the_completed_event_carries_the_results_warnings_and_notes(
    make_client: Callable[..., TestClient], short_speech: Path
) -> None:
    client = make_client({"FAKE_WARNING": "two languages", "FAKE_NOTE": "words timed by Whisper"})
    events = _events(client, upload(client, short_speech)["task_id"])
    assert events[-1][0] == "completed"
    assert (events[-1][1]["warnings"], events[-1][1]["notes"]) == (["two languages"], ["words timed by Whisper"])
    assert all(data["warnings"] == [] for name, data in events if name != "completed")


def test_late_client_gets_the_current_state_first(client: TestClient, short_speech: Path) -> None:
    task_id = upload(client, short_speech)["task_id"]
    wait_for_status(client, task_id, {"completed"})
    events = _events(client, task_id)
    assert [name for name, _ in events] == ["completed"]
    assert events[0][1]["progress"] == 100.0
    assert events[0][1]["message"] == "Transcription completed successfully"


def test_failed_task_ends_the_stream_with_its_error(make_client: Callable[..., TestClient], short_speech: Path) -> None:
    client = make_client({"FAKE_MODE": "fail"})
    task_id = upload(client, short_speech)["task_id"]
    name, data = _events(client, task_id)[-1]
    assert name == "failed"
    assert data["error"] == "The fake pipeline was told to fail."


def test_deleting_the_task_ends_the_stream(make_client: Callable[..., TestClient], short_speech: Path) -> None:
    client = make_client({"FAKE_STEP_SECONDS": "0.2"})
    task_id = upload(client, short_speech)["task_id"]
    wait_for_status(client, task_id, {"processing"})
    timer = threading.Timer(0.5, lambda: client.delete(f"/api/v1/transcribe/task/{task_id}", headers=AUTH))
    timer.start()
    events = _events(client, task_id)
    timer.join()
    assert events[0][0] == "processing"
    assert events[-1][0] == "deleted"


def test_unknown_task_and_missing_key(client: TestClient) -> None:
    response = client.get("/api/v1/transcribe/events/nope", headers=AUTH)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert client.get("/api/v1/transcribe/events/nope").status_code == 401


def test_a_stage_that_reports_nothing_gets_its_estimate_sent_again_each_second(
    make_client: Callable[..., TestClient], short_speech: Path, tmp_path: Path
) -> None:
    """A long transcription batch reports nothing for seconds, and a client counting the last
    estimate down would run out; the stream sends the state again with a fresh estimate."""
    gates = tmp_path / "gates"
    gates.mkdir()
    client = make_client({"FAKE_STEP_SECONDS": "0.01", "FAKE_GATE_DIR": str(gates)})
    timed, held = tmp_path / "timed.wav", tmp_path / "held.wav"
    for path in (timed, held):
        path.write_bytes(short_speech.read_bytes())
    (gates / timed.name).touch()
    _events(client, upload(client, timed)["task_id"])  # every stage timed: the next task has an estimate
    task_id = upload(client, held)["task_id"]
    release = threading.Timer(3.5, (gates / held.name).touch)
    release.start()
    try:
        events = _events(client, task_id)
    finally:
        release.cancel()
    held_events = [data for name, data in events if data["stage"] == "transcribing" and data["progress"] == 3.0]
    # Held about 3.5 s at the start of transcription: the first event, then one a second.
    assert len(held_events) >= 3, events
    assert all(data["eta_seconds"] is not None and data["eta_seconds"] > 0 for data in held_events), held_events
    assert events[-1][0] == "completed"
