"""The attack suite: hostile clients and hostile hosts against the real server process.

The service runs as `python -m tests.fakes`: the real run path (app.main.serve, with its
connection limits) and the whole HTTP stack, on the named FakePipeline, since no attack here
needs a transcription. Each attack measures the API process's peak memory (VmHWM from /proc,
reset before the attack) and prints its figures; bounds in the tests are generous.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import wait_until
from tests.conftest import ROOT, free_port

SECRET = "whsec_" + base64.b64encode(b"a test secret of thirty-two bytes").decode()
MB = 1024 * 1024
# Keys: each attack uses its own, so one's per-key limits never decide another's outcome.
KEYS = (
    "bystander", "bomber", "hooker", "trickler", "uploader", "limited", "former",
    "renamer", "streamer", "enroller", "failer", "neighbour", "talker",
)  # fmt: skip


@dataclass
class Service:
    """A server process of the service, on a loopback port."""

    port: int
    process: subprocess.Popen[bytes]
    upload_dir: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _status(self, field: str) -> float:
        """A VmRSS-like line of /proc/PID/status, in MB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024  # kB
        raise AssertionError(f"no {field} in /proc/{self.process.pid}/status")

    @contextlib.contextmanager
    def peak_growth(self, attack: str) -> Iterator[list[float]]:
        """Yields a list that holds, afterwards, how far the process's RSS rose above its level at the start (MB)."""
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")  # the peak (VmHWM) restarts from now
        before = self._status("VmRSS")
        growth: list[float] = []
        started = time.monotonic()
        yield growth
        peak = self._status("VmHWM")
        growth.append(peak - before)
        print(
            f"\n[attack] {attack}: RSS {before:.0f} MB before, peak {peak:.0f} MB "
            f"(+{growth[0]:.1f} MB), {time.monotonic() - started:.1f} s"
        )

    def bystander_served(self) -> float:
        """A normal client's request, answered properly; its time in seconds."""
        started = time.monotonic()
        response = httpx.get(self.url("/health"), headers={"X-API-Key": "bystander"}, timeout=10)
        assert response.status_code == 200, response.text
        assert response.json()["model_loaded"]
        return time.monotonic() - started


def start_service(tmp_path: Path, ready: Callable[[Service], bool] | None = None, **env: str) -> Iterator[Service]:
    """The service with `env` over the attack defaults, once `ready` (by default: its model loaded)."""
    port = free_port()
    environment = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "API_KEYS": ",".join(KEYS),
        "UPLOAD_DIR": str(tmp_path / "uploads"),
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "MAX_CONCURRENT_TASKS": "1",
        "LOG_LEVEL": "warning",
        **env,
    }
    process = subprocess.Popen([sys.executable, "-m", "tests.fakes"], cwd=ROOT, env=environment, start_new_session=True)
    service = Service(port, process, tmp_path / "uploads")
    try:
        wait_until(lambda: (ready or _loaded)(service), timeout=60, interval=0.2)
        yield service
    finally:
        process.terminate()  # the server stops its own workers
        try:
            process.wait(15)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # whatever of this group outlived it


def _loaded(service: Service) -> bool:
    assert service.process.poll() is None, "the service exited"
    try:
        return bool(httpx.get(service.url("/health"), headers={"X-API-Key": KEYS[0]}, timeout=1).json()["model_loaded"])
    except httpx.TransportError:
        return False


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The service as a test lab: outbound requests to loopback allowed (the hostile hosts run
    there), tight per-key and pace limits so that attacks meet them within seconds."""
    yield from start_service(
        tmp_path_factory.mktemp("lab"),
        AUDIO_URL_ALLOW_PRIVATE="true",
        WEBHOOK_ALLOW_PRIVATE="true",
        WEBHOOK_SECRET=SECRET,
        WEBHOOK_MAX_ATTEMPTS="1",
        MAX_TASKS_PER_KEY="1",
        MAX_UPLOADS_PER_KEY="2",
        BODY_MIN_RATE_KB="1",
        BODY_GRACE_SECONDS="2",
        KEEP_ALIVE_SECONDS="2",
        MAX_CONNECTIONS="150",
        MAX_STORED_TASKS_PER_KEY="20",
        FAKE_STEP_SECONDS="0.1",
    )


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The service with its default settings, as shipped, and a webhook secret, so callbacks are possible."""
    yield from start_service(tmp_path_factory.mktemp("service"), WEBHOOK_SECRET=SECRET)


def upload_head(path: str, key: str, length: int) -> bytes:
    """The request head of a multipart upload of `length` bytes."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {key}\r\n"
        f"Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


FILE_PART = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'


def read_reply(connection: socket.socket, timeout: float = 30) -> str:
    """What the server sends until it closes the connection or `timeout` passes ('' if nothing)."""
    connection.settimeout(timeout)
    reply = b""
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while chunk := connection.recv(65536):
            reply += chunk
    return reply.decode(errors="replace")
