"""Choosing the Whisper model per request: the allowlist, the OpenAI names, GET /v1/models (on FakePipeline,
which echoes the model its job named, and holds its "models" in the real pipeline's model manager)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import openai
import pytest
import redis
from fastapi.testclient import TestClient

from app.main import create_app
from tests.api.conftest import API_KEY, AUTH, make_settings, upload, wait_for_status, wait_until
from tests.conftest import ROOT
from tests.fakes import FakePipeline


def _result(client: TestClient, task_id: str) -> dict[str, object]:
    wait_for_status(client, task_id, {"completed"})
    response = client.get(f"/api/v1/transcribe/result/{task_id}", headers=AUTH)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def test_an_allowed_model_reaches_the_worker(make_client: Callable[..., TestClient], short_speech: Path) -> None:
    """The chosen model reaches the worker's model manager, which loads it beside the default, and /health
    reports what the manager holds, least recently used first."""
    client = make_client(whisper_models="tiny.en, large-v3", max_loaded_models=2)
    wait_until(lambda: client.get("/health", headers=AUTH).json()["models"]["loaded"] == {"worker-0": ["fake"]})
    chosen = upload(client, short_speech, model="tiny.en")["task_id"]
    assert _result(client, chosen)["model"] == "tiny.en"
    wait_until(
        lambda: client.get("/health", headers=AUTH).json()["models"]["loaded"] == {"worker-0": ["fake", "tiny.en"]}
    )
    default = upload(client, short_speech)["task_id"]
    assert _result(client, default)["model"] == "fake"  # no model: the worker's own default
    health = wait_until(
        lambda: (
            (models := client.get("/health", headers=AUTH).json()["models"])["loaded"]["worker-0"][-1] == "fake"
            and models
        )
    )
    assert health["allowed"] == ["base", "tiny.en", "large-v3"]
    assert health["loaded"] == {"worker-0": ["tiny.en", "fake"]}, "the default, used last, is now the newest"


def test_a_model_outside_the_list_is_refused_naming_the_allowed(
    make_client: Callable[..., TestClient], short_speech: Path
) -> None:
    client = make_client(whisper_models="tiny.en")
    with short_speech.open("rb") as audio:
        response = client.post(
            "/api/v1/transcribe/upload", headers=AUTH, files={"file": ("a.wav", audio)}, data={"model": "large-v3"}
        )
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "'large-v3' is not offered" in detail
    assert "base, tiny.en (or leave it out for base;" in detail
    assert client.get("/api/v1/transcribe/tasks", headers=AUTH).json()["total"] == 0


def test_translating_with_an_english_only_model_is_refused(
    make_client: Callable[..., TestClient], short_speech: Path
) -> None:
    client = make_client(whisper_models="tiny.en")
    with short_speech.open("rb") as audio:
        response = client.post(
            "/api/v1/transcribe/upload", headers=AUTH, files={"file": ("a.wav", audio)},
            data={"model": "tiny.en", "task": "translate"},
        )  # fmt: skip
    assert response.status_code == 422
    assert "tiny.en is English-only" in response.json()["detail"]


def test_openai_model_field(live_server: Callable[..., int], short_speech: Path) -> None:
    port = live_server(whisper_models="tiny.en")
    sdk = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY, max_retries=0, timeout=30)
    listed = sdk.models.list()
    assert [model.id for model in listed.data] == ["base", "tiny.en"]
    assert {model.id: model.model_dump()["loaded"] for model in listed.data} == {"base": False, "tiny.en": False}
    with short_speech.open("rb") as audio:
        sdk.audio.transcriptions.create(model="whisper-1", file=audio)
    # whisper-1 is the worker's default: no other model was asked for.
    assert {model.id: model.model_dump()["loaded"] for model in sdk.models.list().data}["tiny.en"] is False
    with short_speech.open("rb") as audio:
        sdk.audio.transcriptions.create(model="tiny.en", file=audio)
    # The worker reports what it holds right after the job.
    wait_until(lambda: {model.id: model.model_dump()["loaded"] for model in sdk.models.list().data}["tiny.en"])
    with short_speech.open("rb") as audio, pytest.raises(openai.UnprocessableEntityError) as refused:
        sdk.audio.transcriptions.create(model="medium", file=audio)
    assert "choose one of: base, tiny.en (or send whisper-1 for base;" in refused.value.response.text
    assert "leave it out" not in refused.value.response.text, "the SDK requires `model`: it cannot be left out"


def test_a_celery_worker_runs_the_model_the_request_chose(redis_url: str, tmp_path: Path, short_speech: Path) -> None:
    """TASK_BACKEND=celery: the chosen model travels through Redis to the worker's pipeline, and the
    worker's loaded models reach /health through its announcements."""
    url = re.sub(r"/\d+$", "/3", redis_url)
    redis.Redis.from_url(url).flushdb()
    settings = make_settings(tmp_path, task_backend="celery", redis_url=url, whisper_models="tiny.en")
    with TestClient(create_app(settings, FakePipeline)) as client:
        task_id = upload(client, short_speech, model="tiny.en")["task_id"]
        # The worker side, as a Celery pool process runs it (in a process of its own: it renices itself).
        worker = (
            "import sys, time\n"
            "from app.config import Settings\n"
            "from app.tasks.remote import RemoteRunner\n"
            "from tests.fakes import FakePipeline\n"
            "runner = RemoteRunner(Settings(), FakePipeline)\n"
            "runner.run(sys.argv[1])\n"
            "time.sleep(5)  # announces what it holds meanwhile\n"
        )
        environment = {
            **os.environ, "TASK_BACKEND": "celery", "REDIS_URL": url, "UPLOAD_DIR": str(settings.upload_dir),
            "MODEL_CACHE_DIR": str(settings.model_cache_dir), "MAX_LOADED_MODELS": "2",
        }  # fmt: skip
        process = subprocess.Popen([sys.executable, "-c", worker, task_id], cwd=ROOT, env=environment)
        try:
            assert _result(client, task_id)["model"] == "tiny.en"
            # The worker announces what it holds every few seconds.
            wait_until(
                lambda: (
                    list(client.get("/health", headers=AUTH).json()["models"]["loaded"].values())
                    == [["fake", "tiny.en"]]
                ),
                timeout=15,
            )
        finally:
            process.wait(30)
