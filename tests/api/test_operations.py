"""GET /metrics (read with prometheus-client's own parser), GET /ready, and the start-up model preflight."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from app.main import create_app
from app.ops.preflight import preflight
from tests.api.conftest import AUTH, make_settings, upload, wait_for_status, wait_until
from tests.fakes import FakePipeline


def _samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics", headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_metrics_count_tasks_stages_audio_and_speed(client: TestClient, short_speech: Path) -> None:
    before = _samples(client)
    assert before[("whisperx_tasks", (("status", "completed"),))] == 0
    assert before[("whisperx_queue_depth", ())] == 0

    done = wait_for_status(client, upload(client, short_speech)["task_id"], {"completed"})
    samples = _samples(client)
    assert samples[("whisperx_tasks", (("status", "completed"),))] == 1
    assert samples[("whisperx_tasks_finished_total", (("status", "completed"),))] == 1
    for stage in ("decoding", "transcribing", "aligning", "diarizing", "assigning speakers"):
        assert samples[("whisperx_stage_duration_seconds_count", (("stage", stage),))] == 1
        # The fake pauses 0.01 s per step, five steps per stage.
        assert samples[("whisperx_stage_duration_seconds_sum", (("stage", stage),))] > 0.02
    # short_speech is about 2 s long (espeak-ng), as probed on upload.
    audio = samples[("whisperx_audio_processed_seconds_total", ())]
    assert 1.0 < audio < 4.0
    assert samples[("whisperx_real_time_factor_count", ())] == 1
    assert samples[("whisperx_real_time_factor_sum", ())] > 0
    assert done["status"] == "completed"


def test_metrics_show_the_queue(make_client: Callable[..., TestClient], short_speech: Path) -> None:
    client = make_client({"FAKE_STEP_SECONDS": "0.2"})
    for _ in range(3):
        upload(client, short_speech)
    samples = wait_until(lambda: (s := _samples(client))[("whisperx_tasks", (("status", "processing"),))] == 1 and s)
    assert samples[("whisperx_queue_depth", ())] == 2
    assert samples[("whisperx_tasks", (("status", "pending"),))] == 2


def test_failures_are_counted(make_client: Callable[..., TestClient], short_speech: Path) -> None:
    client = make_client({"FAKE_MODE": "fail"})
    wait_for_status(client, upload(client, short_speech)["task_id"], {"failed"})
    samples = _samples(client)
    assert samples[("whisperx_tasks_finished_total", (("status", "failed"),))] == 1
    assert samples[("whisperx_real_time_factor_count", ())] == 0


def test_ready_once_the_models_are_loaded(client: TestClient) -> None:
    response = client.get("/ready", headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {"ready": True, "detail": "Ready", "model": "fake", "device": "cpu", "diarizer": None}


def test_not_ready_when_the_models_cannot_load(make_client: Callable[..., TestClient]) -> None:
    client = make_client({"FAKE_MODE": "unloadable"})
    response = wait_until(
        lambda: (r := client.get("/ready", headers=AUTH)).json()["detail"] != "The models are loading" and r
    )
    assert response.status_code == 503
    body = response.json()
    assert body["ready"] is False
    assert body["detail"] == "The models could not be loaded: The fake pipeline was told not to load."
    # /health, the seed's, still answers.
    assert client.get("/health", headers=AUTH).json()["status"] == "degraded"


def test_preflight_names_what_is_missing_and_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    assert preflight(make_settings(tmp_path, whisper_model="base", device="cpu", offline=True)) == []
    (findings,) = preflight(make_settings(tmp_path, whisper_model="small", offline=True))
    assert "WHISPER_MODEL=small does not ship in a package and is not in the model cache" in findings
    assert "fetch it with `python -m app.models pull small`" in findings
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    (findings,) = preflight(make_settings(tmp_path, whisper_model=str(empty)))
    assert "without model.bin" in findings
    assert preflight(make_settings(tmp_path, whisper_model="small")) == []  # downloaded on first use


def test_preflight_findings_are_logged_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings: Settings = make_settings(tmp_path, whisper_model=str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="app"), TestClient(create_app(settings, FakePipeline)):
        pass
    assert f"Model preflight: WHISPER_MODEL={tmp_path} is a directory without model.bin" in caplog.text
