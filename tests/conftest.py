"""Shared fixtures: generated speech and media files, and a live server for socket-level tests."""

from __future__ import annotations

import os

# Before anything imports huggingface_hub or pyannote: no hub look-ups, no telemetry.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed; run scripts/setup --dev")
    return path


def speak(text: str, target: Path, voice: str = "en-us", speed: int = 150) -> Path:
    """Real speech with known words, from espeak-ng, as a 16 kHz mono WAV."""
    raw = target.with_suffix(".raw.wav")
    subprocess.run([_require("espeak-ng"), "-v", voice, "-s", str(speed), "-w", str(raw), text], check=True)
    subprocess.run([_require("sox"), str(raw), "-r", "16000", "-c", "1", str(target)], check=True)
    raw.unlink()
    return target


def ffmpeg(*args: str) -> None:
    subprocess.run([_require("ffmpeg"), "-nostdin", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def short_speech(media_dir: Path) -> Path:
    return speak("Hello there, this is a short test.", media_dir / "short.wav")
