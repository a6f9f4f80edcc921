"""The command-line client (`python -m app.client`, installed as `whisperx-api`) against a live server."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import httpx
import srt

from tests.api.conftest import API_KEY, AUTH
from tests.conftest import ROOT
from tests.fakes import FAKE_LONG_TEXT, FAKE_TEXT


def _cli(port: int, *args: str, key: str | None = API_KEY) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WHISPERX_API_URL": f"http://127.0.0.1:{port}"}
    env.pop("WHISPERX_API_KEY", None)
    if key is not None:
        env["WHISPERX_API_KEY"] = key
    command = [sys.executable, "-m", "app.client", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_files_are_transcribed_in_each_format_next_to_them(
    live_server: Callable[..., int], short_speech: Path, tmp_path: Path
) -> None:
    port = live_server(max_concurrent_tasks=2)
    first, second = tmp_path / "first.wav", tmp_path / "second clip.wav"
    shutil.copy(short_speech, first)
    shutil.copy(short_speech, second)
    run = _cli(port, "-f", "srt", "-f", "txt", str(first), str(second))
    assert run.returncode == 0, run.stderr
    for audio in (first, second):
        cues = list(srt.parse(audio.with_suffix(".srt").read_text()))
        assert cues[0].content == f"[SPEAKER_00]: {FAKE_TEXT}"
        assert audio.with_suffix(".txt").read_text().splitlines() == [
            f"[SPEAKER_00]: {FAKE_TEXT}",
            f"[SPEAKER_01]: {FAKE_LONG_TEXT}",
        ]
        assert f"{audio}: wrote {audio.with_suffix('.srt')}, {audio.with_suffix('.txt')}" in run.stdout
    # A bar per file, driven to 100 % by the events.
    assert run.stderr.count("100%") >= 2
    assert "Transcription completed successfully" in run.stderr
    # The client deletes its tasks once their results are written.
    queue = httpx.get(f"http://127.0.0.1:{port}/metrics", headers=AUTH).text
    assert 'whisperx_tasks{status="completed"} 0.0' in queue


def test_polling_and_output_dir_and_default_json(
    live_server: Callable[..., int], short_speech: Path, tmp_path: Path
) -> None:
    port = live_server()
    run = _cli(port, "--poll", "--no-diarization", "-o", str(tmp_path / "out"), str(short_speech))
    assert run.returncode == 0, run.stderr
    written = tmp_path / "out" / "short.json"
    result = json.loads(written.read_text())
    assert result["segments"][0]["text"] == FAKE_TEXT
    assert result["segments"][0]["speaker"] is None


def test_a_failed_file_makes_the_exit_status_non_zero(
    live_server: Callable[..., int], short_speech: Path, tmp_path: Path
) -> None:
    port = live_server({"FAKE_MODE": "fail"})
    run = _cli(port, "-f", "srt", str(short_speech))
    assert run.returncode == 1
    assert f"{short_speech}: failed: The fake pipeline was told to fail." in run.stderr
    assert not short_speech.with_suffix(".srt").exists()


def test_key_and_connection_problems_are_reported(
    live_server: Callable[..., int], short_speech: Path, tmp_path: Path
) -> None:
    port = live_server()
    wrong = _cli(port, str(short_speech), key="wrong")
    assert wrong.returncode == 1
    assert f"http://127.0.0.1:{port}: Invalid API key" in wrong.stderr
    missing = _cli(port, str(short_speech), key=None)
    assert missing.returncode == 2
    assert "no API key: set WHISPERX_API_KEY" in missing.stderr
    no_file = _cli(port, str(tmp_path / "nothing.wav"))
    assert no_file.returncode == 2
    assert "is not a file" in no_file.stderr
    nobody = _cli(1, str(short_speech))  # nothing listens on port 1
    assert nobody.returncode == 1
    assert "cannot reach http://127.0.0.1:1" in nobody.stderr


def test_the_installed_command_points_at_the_client() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts["whisperx-api"].partition(":")
    assert callable(getattr(importlib.import_module(module), function))
