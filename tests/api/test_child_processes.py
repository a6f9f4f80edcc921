"""No process the API starts outlives it: its worker, its standby, its enrolment process, its live
worker and multiprocessing's resource tracker end when the API is stopped (SIGTERM) and when it is killed (SIGKILL).

The service runs as a real process (`python -m tests.fakes`: the real run path on FakePipeline),
in a session of its own, so that whatever the test leaves behind can be cleared at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from tests.api.conftest import API_KEY, AUTH
from tests.conftest import ROOT, Deadline, ffmpeg, free_port


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rpartition(")")[2].split()


def _descendants(root: int) -> dict[int, tuple[str, str]]:
    """Every living process below `root`: pid → (start time, command line)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            parents[int(entry.name)] = int(fields[1])
    found: dict[int, tuple[str, str]] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and (fields := _stat(pid)) is not None:
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                    command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                    found[pid] = (fields[19], command)
                    frontier.append(pid)
    return found


def _alive(pid: int, started: str) -> bool:
    """Still running: not gone, not a zombie waiting to be reaped, and not a new process with a reused pid."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z" and fields[19] == started


def _kinds(processes: dict[int, tuple[str, str]]) -> list[str]:
    kinds = []
    for _, command in processes.values():
        if "resource_tracker" in command:
            kinds.append("resource tracker")
        elif "spawn_main" in command:
            kinds.append("spawned")
    return sorted(kinds)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], dict[int, tuple[str, str]]]]:
    """The service with its worker, standby, enrolment process and live worker started; and those children."""
    port = free_port()
    environment = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "API_KEYS": API_KEY,
        "UPLOAD_DIR": str(tmp_path / "uploads"),
        "DATA_DIR": str(tmp_path / "data"),
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "MAX_CONCURRENT_TASKS": "1",
        "STANDBY_WORKERS": "1",
        "LOG_LEVEL": "warning",
    }
    process = subprocess.Popen([sys.executable, "-m", "tests.fakes"], cwd=ROOT, env=environment, start_new_session=True)
    try:
        silence = tmp_path / "silence.wav"
        ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "1", str(silence))
        deadline = Deadline(60, "the service to answer")
        while True:
            assert process.poll() is None, "the service exited"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/ready", headers=AUTH, timeout=2).status_code == 200:
                    break
            deadline.check()
            time.sleep(0.1)
        # A sample with no speech: refused, but only after the enrolment process has started and decoded it.
        with silence.open("rb") as sample:
            response = httpx.post(
                f"http://127.0.0.1:{port}/api/v1/speakers",
                headers=AUTH,
                data={"name": "Nobody"},
                files={"file": sample},
                timeout=60,
            )
        assert response.status_code == 422, response.text
        # A live session: `session.created` comes once the live worker has loaded; it stays loaded after.
        with connect(
            f"ws://127.0.0.1:{port}/v1/realtime?intent=transcription", additional_headers={"X-API-Key": API_KEY}
        ) as session:
            assert json.loads(session.recv(timeout=60))["type"] == "session.created"
        # The worker, the standby (loading once the worker has loaded), the enrolment process, the live worker.
        deadline = Deadline(60, "a worker, a standby, the enrolment and live processes and the resource tracker")
        while _kinds(children := _descendants(process.pid)) != ["resource tracker", *["spawned"] * 4]:
            deadline.check(children)
            time.sleep(0.1)
        yield process, children
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever of the session outlived the test
        process.wait(10)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_no_child_process_outlives_the_api(
    service: tuple[subprocess.Popen[bytes], dict[int, tuple[str, str]]], stop: signal.Signals
) -> None:
    process, children = service
    process.send_signal(stop)
    process.wait(30)
    deadline = Deadline(15, f"every child process to end after {stop.name} to the API")
    while left := {pid: command for pid, (started, command) in children.items() if _alive(pid, started)}:
        deadline.check(left)
        time.sleep(0.1)
