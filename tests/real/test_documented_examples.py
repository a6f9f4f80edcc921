"""The curl flow (README and docs/api.md) and the seed's Python polling script run as written."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ffmpeg
from tests.documented import code_blocks
from tests.real.conftest import PORT, Server


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


@pytest.mark.parametrize("page", ["README.md", "docs/api.md"])
def test_curl_flow(server: Server, audio_mp3: Path, page: str) -> None:
    (block,) = code_blocks(page, "Example Usage with curl", PORT)
    upload, check, fetch, delete = _shell_commands(block)
    accepted = json.loads(_run(["bash", "-c", upload], audio_mp3.parent))
    assert accepted["status"] == "pending"
    task_id = accepted["task_id"]

    def status() -> dict[str, object]:
        return dict(json.loads(_run(["bash", "-c", check.replace("abc-123", task_id)], audio_mp3.parent)))

    deadline = time.monotonic() + 300
    while (current := status())["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline, f"the task did not finish in 300 s: {current}"
        time.sleep(0.5)
    assert current["status"] == "completed", current["error"]

    result = json.loads(_run(["bash", "-c", fetch.replace("abc-123", task_id)], audio_mp3.parent))
    text = " ".join(segment["text"] for segment in result["segments"])
    assert "brother likes to read books" in text

    deleted = json.loads(_run(["bash", "-c", delete.replace("abc-123", task_id)], audio_mp3.parent))
    assert deleted["task_id"] == task_id
    assert status()["status"] == 404, "the deleted task is gone"


def test_python_polling_script(server: Server, audio_mp3: Path) -> None:
    (block,) = code_blocks("docs/api.md", "Example Usage with Python", PORT)
    script = audio_mp3.parent / "poll.py"
    script.write_text(block)
    output = _run([sys.executable, str(script)], audio_mp3.parent)
    assert re.search(r"^Task ID: [0-9a-f-]{36}$", output, re.MULTILINE), output
    assert "Status: completed - Progress: 100.0%" in output
    assert "[SPEAKER_00] The weather is warm and sunny today." in output
