"""The command-line client (`python -m app.client`, installed as `whisperx-api`) against a live server."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import httpx
import srt

from tests.api.conftest import API_KEY, AUTH
from tests.conftest import ROOT, ffmpeg
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
    assert "| ," not in run.stderr, "the progress line starts with the task's words, not a comma"
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


def test_warnings_and_notes_are_printed_under_their_file_and_leave_the_exit_status_zero(
    live_server: Callable[..., int], short_speech: Path, tmp_path: Path
) -> None:
    warning = "this audio may contain more than one language; send multilingual=true"
    port = live_server({"FAKE_WARNING": warning, "FAKE_NOTE": "words timed by Whisper"})
    audio = tmp_path / "talk.wav"
    shutil.copy(short_speech, audio)
    run = _cli(port, str(audio))
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        f"{audio}: wrote {tmp_path / 'talk.json'}",
        f"{audio}: warning: {warning}",
        f"{audio}: note: words timed by Whisper",
    ]


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


def test_inputs_with_one_stem_keep_every_result(
    live_server: Callable[..., int], short_speech: Path, tmp_path: Path
) -> None:
    port = live_server(max_concurrent_tasks=2)
    inputs = [tmp_path / "dialogue.wav", tmp_path / "dialogue.mp3", tmp_path / "dialogue.m4a"]
    shutil.copy(short_speech, inputs[0])
    for target in inputs[1:]:
        ffmpeg("-i", str(short_speech), str(target))
    run = _cli(port, "-f", "srt", "-f", "txt", "-o", str(tmp_path / "out"), *map(str, inputs))
    assert run.returncode == 0, run.stderr
    for audio in inputs:
        srt_file, txt_file = tmp_path / "out" / f"{audio.name}.srt", tmp_path / "out" / f"{audio.name}.txt"
        assert f"{audio}: wrote {srt_file}, {txt_file}" in run.stdout
        assert next(srt.parse(srt_file.read_text())).content == f"[SPEAKER_00]: {FAKE_TEXT}"
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == sorted(
        f"{audio.name}.{fmt}" for audio in inputs for fmt in ("srt", "txt")
    )


def test_inputs_that_would_overwrite_each_other_are_refused_before_any_upload(
    live_server: Callable[..., int], short_speech: Path, tmp_path: Path
) -> None:
    port = live_server()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = tmp_path / "a" / "dialogue.wav", tmp_path / "b" / "dialogue.wav"
    shutil.copy(short_speech, first)
    shutil.copy(short_speech, second)
    run = _cli(port, "-o", str(tmp_path / "out"), str(first), str(second))
    assert run.returncode == 2
    assert f"{first}, {second} would write the same result files" in run.stderr
    assert httpx.get(f"http://127.0.0.1:{port}/api/v1/transcribe/tasks", headers=AUTH).json()["total"] == 0
    # Next to their inputs, in two folders, they do not clash.
    assert _cli(port, str(first), str(second)).returncode == 0
    assert first.with_suffix(".json").is_file()
    assert second.with_suffix(".json").is_file()


def test_an_upload_over_the_limit_is_reported_as_the_server_words_it(
    live_server: Callable[..., int], tmp_path: Path
) -> None:
    port = live_server(max_upload_mb=1)
    health = httpx.get(f"http://127.0.0.1:{port}/health", headers=AUTH).json()
    assert health["max_upload_mb"] == 1
    # The server's words: a declared length over the limit is refused before a byte of it is read.
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.sendall(
            b"POST /api/v1/transcribe/upload HTTP/1.1\r\nHost: localhost\r\n"
            + f"X-API-Key: {API_KEY}\r\nContent-Length: {2 * 1024 * 1024}\r\n".encode()
            # A multipart body, as the CLI sends: other bodies meet the smaller MAX_BODY_KB.
            + b"Content-Type: multipart/form-data; boundary=x\r\n\r\n"
        )
        answer = b"".join(iter(lambda: connection.recv(65536), b""))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    detail = json.loads(body)["detail"]
    # 200 MB: sent, it would meet a closed connection and the answer would be lost.
    big = tmp_path / "meeting.wav"
    with big.open("wb") as sparse:
        sparse.truncate(200 * 1024 * 1024)
    run = _cli(port, str(big))
    assert run.returncode == 1
    assert f"{big}: failed: {detail}" in run.stderr
    assert "cannot reach" not in run.stderr


def test_unsupported_files_and_busy_keys_are_reported_as_the_server_words_them(
    live_server: Callable[..., int], short_speech: Path, tmp_path: Path
) -> None:
    port = live_server({"FAKE_STEP_SECONDS": "0.2"}, max_tasks_per_key=1)
    notes = tmp_path / "notes.txt"
    notes.write_text("meeting notes, not audio\n" * 50)
    with notes.open("rb") as body:
        unsupported = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/transcribe/upload", headers=AUTH, files={"file": ("notes.txt", body)}
        )
    assert unsupported.status_code == 415
    run = _cli(port, str(notes))
    assert f"{notes}: failed: {unsupported.json()['detail']}" in run.stderr

    second = tmp_path / "second.wav"
    shutil.copy(short_speech, second)
    run = _cli(port, str(short_speech), str(second))
    assert run.returncode == 1
    assert "(MAX_TASKS_PER_KEY)" in run.stderr, run.stderr
