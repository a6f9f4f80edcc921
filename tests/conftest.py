"""Shared fixtures: generated speech and media files, and a live server for socket-level tests."""

from __future__ import annotations

import os

# Before anything imports huggingface_hub or pyannote: no hub look-ups, no telemetry.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")
# Every service a test starts would also load a standby worker (a worker's memory and start-up, beside
# the test's own tasks); the tests of standby workers ask for one.
os.environ.setdefault("STANDBY_WORKERS", "0")

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

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


def free_port(variable: str = "TEST_PORTS") -> int:
    """A free loopback port for a test server: the first free one of TEST_PORTS (say 8110-8119)
    when that is set, for machines where servers must keep to a range; else any the OS gives."""
    first, _, last = os.environ.get(variable, "0").partition("-")
    for port in range(int(first), int(last or first) + 1):
        with socket.socket() as probe:
            # As uvicorn binds: a port a finished test server left in TIME_WAIT is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            chosen: int = probe.getsockname()[1]
            return chosen
    raise RuntimeError(f"no free port in {variable}={os.environ[variable]}")


class Deadline:
    """A time limit for a polling loop: `check` fails the test, naming what it waited for, once it has passed."""

    def __init__(self, seconds: float, awaiting: str) -> None:
        self.seconds = seconds
        self.awaiting = awaiting
        self._end = time.monotonic() + seconds

    def check(self, last_seen: object = None) -> None:
        if time.monotonic() > self._end:
            pytest.fail(f"waited {self.seconds:g} s for {self.awaiting}; last seen: {last_seen!r}")


def ffmpeg(*args: str) -> None:
    subprocess.run([_require("ffmpeg"), "-nostdin", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def short_speech(media_dir: Path) -> Path:
    return speak("Hello there, this is a short test.", media_dir / "short.wav")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on loopback, in memory only, on a free port of REDIS_TEST_PORTS (say 6390-6399)."""
    port = free_port("REDIS_TEST_PORTS")
    workdir = tmp_path_factory.mktemp("redis")
    command = [_require("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen([*command, "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        for _ in range(200):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if process.poll() is not None:
                pytest.fail(f"redis-server exited with {process.returncode}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def chromium(*extra_args: str) -> Iterator[Browser]:
    """The system's headless chromium, driven by Playwright (its own browser downloads need the network)."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=_require("chromium"),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                # Playback starts from a click on a word; allow it where headless has no audio device.
                "--autoplay-policy=no-user-gesture-required",
                *extra_args,
            ],
        )
        try:
            yield launched
        finally:
            launched.close()


def microphone_args(clip: Path) -> list[str]:
    """Chromium's flags for a microphone that plays `clip` (a WAV, looped), allowed without asking."""
    return [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={clip}",
    ]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One chromium per module: Playwright's sync API keeps its event loop marked running in the main
    thread while it is open, and a later test's asyncio.run() would then refuse to start; for the same
    reason a module that needs another chromium (a fake microphone's) launches it instead of this one."""
    with chromium() as launched:
        yield launched
