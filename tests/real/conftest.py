"""Real tier: the service as a real process, on the embedded `base` model, with real speech."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jiwer
import pytest

from tests.conftest import ROOT, ffmpeg, speak

# The documented examples use this key and port verbatim, so the real server does too
# (REAL_TIER_PORT moves it, for running two checkouts' suites side by side).
API_KEY = "your-api-key"
# Callbacks from the real server go to a loopback receiver, so private targets are allowed.
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"the real tier's webhook secret").decode()
PORT = int(os.environ.get("REAL_TIER_PORT", "8000"))
BASE_URL = f"http://127.0.0.1:{PORT}"
AUTH = {"X-API-Key": API_KEY}

KNOWN_TEXT = (
    "The weather is warm and sunny today. My brother likes to read books in the garden. "
    "We will meet at the station after lunch. Please bring some water and a small map. "
    "The little dog runs across the green field."
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(item.path).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.real)


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def word_error_rate(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(normalise(reference), normalise(hypothesis)))


@dataclass(frozen=True)
class Server:
    url: str
    upload_dir: Path
    pid: int


@contextmanager
def serving(workdir: Path, port: int, **settings: str) -> Iterator[Server]:
    """`python -m app.main` on a loopback port, models loaded; `settings` override the environment."""
    log_path = workdir / "server.log"
    env = {
        **os.environ,
        "API_KEYS": API_KEY,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "UPLOAD_DIR": str(workdir / "uploads"),
        "MAX_CONCURRENT_TASKS": "2",
        # One chunk per batch, so transcription progress visibly advances chunk by chunk.
        "BATCH_SIZE": "1",
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "WEBHOOK_ALLOW_PRIVATE": "true",
        # audio_url tests serve their audio from a loopback HTTP server.
        "AUDIO_URL_ALLOW_PRIVATE": "true",
        **settings,
    }
    env.pop("WHISPER_MODEL", None)
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "app.main"], cwd=ROOT, env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the server did not become ready:\n{log_path.read_text()[-4000:]}")
            try:
                if httpx.get(f"{url}/health", headers=AUTH).json().get("model_loaded"):
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        yield Server(url=url, upload_dir=workdir / "uploads", pid=process.pid)
    finally:
        process.terminate()
        process.wait(30)
        sys.stderr.write(f"\n--- server log tail ---\n{log_path.read_text()[-3000:]}\n")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The service on port 8000, two workers, models loaded."""
    with serving(tmp_path_factory.mktemp("server"), PORT) as running:
        yield running


@pytest.fixture(scope="session")
def known_speech(media_dir: Path) -> Path:
    return speak(KNOWN_TEXT, media_dir / "known.wav")


@pytest.fixture(scope="session")
def long_speech(known_speech: Path, media_dir: Path) -> Path:
    """About 90 s of speech, several transcription chunks: the known clip six times over."""
    target = media_dir / "long.wav"
    ffmpeg("-stream_loop", "5", "-i", str(known_speech), "-c", "copy", str(target))
    return target


@pytest.fixture(scope="session")
def pyannote_sample() -> tuple[Path, str]:
    """The pyannote wheel's two-speaker telephone clip and its reference words."""
    import pyannote.audio

    folder = Path(pyannote.audio.__file__).parent / "sample"
    words = " ".join(line.split(maxsplit=5)[5] for line in (folder / "sample.stm").read_text().splitlines())
    return folder / "sample.wav", words


def submit(path: Path, base_url: str = BASE_URL, **form: Any) -> str:
    with path.open("rb") as audio:
        response = httpx.post(
            f"{base_url}/api/v1/transcribe/upload", headers=AUTH, files={"file": (path.name, audio)}, data=form
        )
    assert response.status_code == 202, response.text
    task_id: str = response.json()["task_id"]
    return task_id


def get_status(task_id: str, base_url: str = BASE_URL) -> dict[str, Any]:
    response = httpx.get(f"{base_url}/api/v1/transcribe/status/{task_id}", headers=AUTH)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_done(task_id: str, timeout: float = 300, base_url: str = BASE_URL) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = get_status(task_id, base_url)
        if doc["status"] in ("completed", "failed"):
            return doc
        time.sleep(0.2)
    raise AssertionError(f"task {task_id} did not finish within {timeout} s")


def transcript_text(result: dict[str, Any]) -> str:
    return " ".join(segment["text"] for segment in result["segments"])
