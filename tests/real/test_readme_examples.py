"""The README's curl commands and Python polling script (the seed's own) run as written."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, Deadline, ffmpeg
from tests.real.conftest import PORT, Server

# Verbatim, but for the port when REAL_TIER_PORT moves the server off 8000.
README = (ROOT / "README.md").read_text().replace("localhost:8000", f"localhost:{PORT}")


def _code_block(heading: str) -> str:
    match = re.search(rf"^### {re.escape(heading)}\n+```\w+\n(.*?)^```", README, re.MULTILINE | re.DOTALL)
    assert match, f"README has no code block under '### {heading}'"
    return match.group(1)


def _shell_commands(block: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.fixture
def audio_mp3(tmp_path: Path, known_speech: Path) -> Path:
    target = tmp_path / "audio.mp3"
    ffmpeg("-i", str(known_speech), str(target))
    return target


def _run(command: list[str], cwd: Path) -> str:
    completed = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def test_curl_examples(server: Server, audio_mp3: Path) -> None:
    upload, check, fetch = _shell_commands(_code_block("Example Usage with curl"))
    accepted = json.loads(_run(["bash", "-c", upload], audio_mp3.parent))
    assert accepted["status"] == "pending"
    task_id = accepted["task_id"]

    status = json.loads(_run(["bash", "-c", check.replace("abc-123", task_id)], audio_mp3.parent))
    deadline = Deadline(300, f"task {task_id} to finish")
    while status["status"] not in ("completed", "failed"):
        deadline.check(status)
        time.sleep(0.5)
        status = json.loads(_run(["bash", "-c", check.replace("abc-123", task_id)], audio_mp3.parent))
    assert status["status"] == "completed", status["error"]

    result = json.loads(_run(["bash", "-c", fetch.replace("abc-123", task_id)], audio_mp3.parent))
    text = " ".join(segment["text"] for segment in result["segments"])
    assert "brother likes to read books" in text


def test_python_polling_script(server: Server, audio_mp3: Path) -> None:
    script = audio_mp3.parent / "poll.py"
    script.write_text(_code_block("Example Usage with Python"))
    output = _run([sys.executable, str(script)], audio_mp3.parent)
    assert re.search(r"^Task ID: [0-9a-f-]{36}$", output, re.MULTILINE), output
    assert "Status: completed - Progress: 100.0%" in output
    assert "[SPEAKER_00] The weather is warm and sunny today." in output
