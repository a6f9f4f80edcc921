"""Models from a hub, cache first: the real service against a real hub protocol server on loopback.

The hub serves the embedded `base` files as `Systran/faster-whisper-base` and a tiny random wav2vec2
CTC model as an alignment repo. The service starts on the embedded `tiny.en`; requests choose `base`
by its repo id, so the first one downloads it. Then: cached loads with the hub gone (a listener in its
place that would hang any request, and must see none), a fast, actionable error with an empty cache,
and LRU/idle unloading watched through /health.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.pipeline.models import embedded_whisper_model
from tests.conftest import ROOT, free_port
from tests.hub_server import black_hole, random_wav2vec2_ctc, running_hub
from tests.real.conftest import KNOWN_TEXT, transcript_text, word_error_rate

API_KEY = "hub-test-key"
AUTH = {"X-API-Key": API_KEY}
BASE_REPO = "Systran/faster-whisper-base"
ALIGN_REPO = "test-random/wav2vec2-ctc-random-tiny"


@pytest.fixture(scope="module")
def hub_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hub")
    base = embedded_whisper_model("base", folder / "assembled")
    assert base is not None
    return {BASE_REPO: base, ALIGN_REPO: random_wav2vec2_ctc(folder / "wav2vec2-ctc-random-tiny")}


class Service:
    def __init__(self, port: int, process: subprocess.Popen[bytes], log: Path) -> None:
        self.url, self.process, self.log = f"http://127.0.0.1:{port}", process, log

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.url}/health", headers=AUTH, timeout=5).json()
        return body

    def submit(self, audio: Path, **form: Any) -> str:
        with audio.open("rb") as file:
            response = httpx.post(
                f"{self.url}/api/v1/transcribe/upload", headers=AUTH, files={"file": (audio.name, file)},
                data={"enable_diarization": "false", **form}, timeout=30,
            )  # fmt: skip
        assert response.status_code == 202, response.text
        task_id: str = response.json()["task_id"]
        return task_id

    def wait(self, task_id: str, timeout: float = 240) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body: dict[str, Any] = httpx.get(
                f"{self.url}/api/v1/transcribe/status/{task_id}", headers=AUTH, timeout=5
            ).json()
            if body["status"] in ("completed", "failed"):
                return body
            time.sleep(0.1)
        raise AssertionError(f"task {task_id} did not finish within {timeout} s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        """The service's log without its access lines."""
        return "\n".join(line for line in self.log.read_text().splitlines() if '" 200 OK' not in line)[-3000:]

    def result(self, task_id: str) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(
            f"{self.url}/api/v1/transcribe/result/{task_id}", headers=AUTH, timeout=5
        ).json()
        return body


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    started: list[Service] = []

    def start(hub_url: str, cache: Path, **env: str) -> Service:
        port = free_port()
        log = tmp_path / f"service-{len(started)}.log"
        environment = {
            **os.environ,
            "API_KEYS": API_KEY, "HOST": "127.0.0.1", "PORT": str(port), "UPLOAD_DIR": str(tmp_path / "uploads"),
            "MODEL_CACHE_DIR": str(cache), "MAX_CONCURRENT_TASKS": "1", "WHISPER_MODEL": "tiny.en",
            "WHISPER_MODELS": f"{BASE_REPO},base", "ALIGN_MODEL": ALIGN_REPO, "HF_ENDPOINT": hub_url,
            # Downloads allowed, as on a user's first start (the test tiers turn them off elsewhere).
            "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", **env,
        }  # fmt: skip
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "app.main"], cwd=ROOT, env=environment, stdout=output, stderr=output
            )
        service = Service(port, process, log)
        started.append(service)
        deadline = time.monotonic() + 300
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                # Fully loaded (the diarizer too), so a task starts the moment it is submitted.
                if service.health()["diarizer"]:
                    return service
            except httpx.TransportError:
                pass
            time.sleep(0.3)

    yield start
    for service in started:
        service.process.terminate()
        service.process.wait(30)


def test_download_on_first_use_then_cached_with_the_hub_gone(
    hub_files: dict[str, Path], start_service: Callable[..., Service], tmp_path: Path, media_dir: Path
) -> None:
    from tests.conftest import speak

    speech = speak(KNOWN_TEXT, media_dir / "hub-known.wav")
    cache = tmp_path / "cache"
    with running_hub(hub_files) as hub:
        service = start_service(hub.url, cache)
        assert hub.file_requests("model.bin") == 0  # tiny.en is embedded: nothing fetched at start
        started = time.monotonic()
        task = service.submit(speech, model=BASE_REPO)
        done = service.wait(task)
        first = time.monotonic() - started
        assert done["status"] == "completed", done
        result = service.result(task)
        assert result["model"] == BASE_REPO
        assert result["word_timing"] == "wav2vec2-alignment"  # the random aligner came from the hub too
        assert word_error_rate(KNOWN_TEXT, transcript_text(result)) < 0.15
        assert hub.file_requests("model.bin") == 1
        assert hub.file_requests("model.safetensors") == 1
        port = hub.port
    snapshots = list((cache / "whisper" / "models--Systran--faster-whisper-base" / "snapshots").glob("*/model.bin"))
    assert len(snapshots) == 1
    assert snapshots[0].stat().st_size == (hub_files[BASE_REPO] / "model.bin").stat().st_size
    service.process.terminate()
    service.process.wait(30)

    # The hub is gone; in its place a listener that would hang any request sent to it.
    with black_hole(port) as hole:
        service = start_service(hole.url, cache)
        started = time.monotonic()
        task = service.submit(speech, model=BASE_REPO)
        done = service.wait(task)
        cached = time.monotonic() - started
        assert done["status"] == "completed", done
        result = service.result(task)
        assert (result["model"], result["word_timing"]) == (BASE_REPO, "wav2vec2-alignment")
        assert hole.accepted == []  # loaded from the cache without a single connection
    sys.stderr.write(f"\nbase through the local hub: first task {first:.1f} s, after restart (cached) {cached:.1f} s\n")


def test_an_uncached_model_fails_fast_when_the_hub_is_silent(
    start_service: Callable[..., Service], tmp_path: Path, short_speech: Path
) -> None:
    with black_hole() as hole:
        # With HF_TOKEN, pyannote's pipeline is wanted too; it cannot be had either.
        service = start_service(hole.url, tmp_path / "empty-cache", HF_TOKEN="hf_test_token_not_real")
        started = time.monotonic()
        task = service.submit(short_speech, model=BASE_REPO)
        done = service.wait(task, timeout=60)
        elapsed = time.monotonic() - started
        assert done["status"] == "failed"
        assert elapsed < 5, f"the error took {elapsed:.1f} s"
        assert f"python -m app.models pull {BASE_REPO}" in done["error"]
        assert "MODEL_CACHE_DIR" in done["error"]
        assert "did not answer" in done["error"]
        sys.stderr.write(f"\nuncached model, silent hub: failed after {elapsed:.1f} s: {done['error']}\n")

        # The service stays up on its default model; /health tells the operator what failed and what to run.
        assert service.health()["status"] == "ok"
        _eventually(lambda: BASE_REPO in service.health()["models"]["errors"])  # reported right after the task
        assert f"python -m app.models pull {BASE_REPO}" in service.health()["models"]["errors"][BASE_REPO]
        # The embedded diarizer stands in for pyannote's.
        assert service.health()["diarizer"] != "pyannote/speaker-diarization-3.1"
        done = service.wait(service.submit(short_speech, enable_diarization="true"))
        assert done["status"] == "completed", done
        assert "embedded diarizer labelled the speakers" in done["message"]
        result = service.result(done["task_id"])
        assert any("pyannote/speaker-diarization-3.1 could not be loaded" in note for note in result["notes"])
        assert "python -m app.models pull diarization" in " ".join(result["notes"])
        assert result["speakers"]


def test_an_aligner_the_hub_cannot_give_costs_one_try_one_log_line_and_a_short_note(
    start_service: Callable[..., Service], tmp_path: Path, short_speech: Path
) -> None:
    note = "words timed by Whisper; the wav2vec2 alignment model for en is not cached"
    with black_hole() as hole:
        # Two workers, both wanting the English aligner at start and for every task.
        service = start_service(hole.url, tmp_path / "empty-cache", MAX_CONCURRENT_TASKS="2", STANDBY_WORKERS="0")
        done = [service.wait(task) for task in [service.submit(short_speech) for _ in range(4)]]
        assert [task["message"] for task in done] == [f"Transcription completed; {note}"] * 4
        assert all(service.result(task["task_id"])["notes"] == [note] for task in done)
        assert len(hole.accepted) == 1, "the hub is asked once, not by every worker or task"
        # The details are for the operator: /health, and one line in the log.
        details = service.health()["models"]["errors"]["align:en"]
        assert "did not answer" in details
        assert "python -m app.models pull align:en" in details
        logged = [line for line in service.log.read_text().splitlines() if "align:en" in line]
        assert len(logged) == 1, logged


def test_models_are_unloaded_least_recently_used_first_and_when_idle_and_offline_refuses_downloads(
    start_service: Callable[..., Service], tmp_path: Path, short_speech: Path
) -> None:
    with black_hole() as hole:  # only embedded models here
        service = start_service(
            hole.url, tmp_path / "cache", MAX_LOADED_MODELS="1", MODEL_IDLE_SECONDS="3", OFFLINE="true"
        )
        assert service.health()["models"]["loaded"] == {"worker-0": ["tiny.en"]}
        assert service.wait(service.submit(short_speech, model="base"))["status"] == "completed"

        def loaded() -> list[str]:
            models: list[str] = service.health()["models"]["loaded"]["worker-0"]
            return models

        _eventually(lambda: loaded() == ["base"])  # tiny.en made room for it
        _eventually(lambda: loaded() == [], timeout=15)  # base idle for MODEL_IDLE_SECONDS
        done = service.wait(service.submit(short_speech))
        assert (done["status"], service.result(done["task_id"])["model"]) == ("completed", "tiny.en")
        _eventually(lambda: loaded() == ["tiny.en"])
        refused = httpx.post(
            f"{service.url}/api/v1/transcribe/upload", headers=AUTH, timeout=10,
            files={"file": ("a.wav", short_speech.read_bytes())}, data={"model": "small"},
        )  # fmt: skip
        assert refused.status_code == 422
        assert "tiny.en, Systran/faster-whisper-base, base" in refused.text
        # OFFLINE=true: a model that is not cached is refused at once, and the hub is never asked.
        started = time.monotonic()
        done = service.wait(service.submit(short_speech, model=BASE_REPO), timeout=60)
        assert done["status"] == "failed"
        assert "downloads are off (OFFLINE=true or HF_HUB_OFFLINE=1)" in done["error"]
        assert time.monotonic() - started < 5
        assert hole.accepted == []


def _eventually(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.2)


def test_pull_and_list_against_the_hub(hub_files: dict[str, Path], tmp_path: Path) -> None:
    cache = tmp_path / "cache"

    def models(*args: str, hub_url: str) -> subprocess.CompletedProcess[str]:
        environment = {
            **os.environ, "MODEL_CACHE_DIR": str(cache), "HF_ENDPOINT": hub_url, "HF_HUB_OFFLINE": "0",
            "TRANSFORMERS_OFFLINE": "0", "WHISPER_MODELS": BASE_REPO, "ALIGN_MODEL": ALIGN_REPO,
        }  # fmt: skip
        return subprocess.run(
            [sys.executable, "-m", "app.models", *args], cwd=ROOT, env=environment, capture_output=True, text=True,
            timeout=300, check=False,
        )  # fmt: skip

    with running_hub(hub_files) as hub:
        before = models("list", hub_url=hub.url)
        pulled = models("pull", BASE_REPO, "align:en", hub_url=hub.url)
        assert pulled.returncode == 0, pulled.stderr
        assert "100%" in pulled.stderr  # the progress bar
        assert hub.file_requests("model.bin") == 1
        listed = models("list", hub_url=hub.url)
    rows = {line.split()[0]: line.split()[1:] for line in listed.stdout.splitlines()[1:]}
    assert {line.split()[0]: line.split()[1] for line in before.stdout.splitlines()[1:]}[BASE_REPO] == "downloadable"
    assert rows[BASE_REPO][:3] == ["cached", "143.3", "MB"]
    assert rows["align:en"][0] == "cached"
    assert rows["base"][0] == "embedded"
    assert rows["tiny.en"][0] == "embedded"
    assert rows["large-v2"][0] == "downloadable"

    with black_hole() as hole:
        started = time.monotonic()
        failed = models("pull", "small", hub_url=hole.url)
        elapsed = time.monotonic() - started
    assert failed.returncode == 1
    assert "did not answer within 3 s" in failed.stderr
    assert "python -m app.models pull small" in failed.stderr
    sys.stderr.write(f"\npull with a silent hub: failed after {elapsed:.1f} s (process start included)\n")
