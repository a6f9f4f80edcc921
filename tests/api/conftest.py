"""Fast tier: the whole HTTP stack and real worker processes, running the named FakePipeline."""

from __future__ import annotations

import contextlib
import gzip
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.bombs import gzip_bomb
from tests.conftest import ROOT, free_port
from tests.fakes import FakeLiveEngine, FakePipeline

API_KEY = "test-key"
AUTH = {"X-API-Key": API_KEY}


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "api_keys": f"{API_KEY},second-key",
        "upload_dir": tmp_path / "uploads",
        "model_cache_dir": tmp_path / "cache",
        "data_dir": tmp_path / "data",
        "max_concurrent_tasks": 1,
        "cancel_grace_seconds": 1.0,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, FakePipeline)) as test_client:
        wait_until(lambda: test_client.get("/health", headers=AUTH).json()["model_loaded"])
        yield test_client


@pytest.fixture
def make_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., TestClient]]:
    """A client on an app whose FakePipeline workers get the given FAKE_* environment."""
    opened: list[TestClient] = []

    def factory(fake_env: dict[str, str] | None = None, **settings: Any) -> TestClient:
        for name, value in (fake_env or {}).items():
            monkeypatch.setenv(name, value)
        test_client = TestClient(create_app(make_settings(tmp_path, **settings), FakePipeline))
        test_client.__enter__()
        opened.append(test_client)
        return test_client

    yield factory
    for test_client in opened:
        test_client.__exit__(None, None, None)


@pytest.fixture
def live_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., int]]:
    """Starts the app under a real uvicorn server on a loopback port, for socket-level checks
    and clients that bring their own HTTP stack (live sessions on the FakeLiveEngine); returns the
    port once the models are loaded."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(fake_env: dict[str, str] | None = None, **settings: Any) -> int:
        for name, value in (fake_env or {}).items():
            monkeypatch.setenv(name, value)
        app = create_app(make_settings(tmp_path, **settings), FakePipeline, FakeLiveEngine)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        wait_until(lambda: server.started)
        wait_until(lambda: app.state.manager.worker_state().loaded)
        return port

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


def wait_until(condition: Callable[[], Any], timeout: float = 20.0, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def upload(client: TestClient, path: Path, **form: Any) -> dict[str, Any]:
    with path.open("rb") as audio:
        response = client.post("/api/v1/transcribe/upload", headers=AUTH, files={"file": (path.name, audio)}, data=form)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def status(client: TestClient, task_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/transcribe/status/{task_id}", headers=AUTH)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_for_status(client: TestClient, task_id: str, wanted: set[str], timeout: float = 20.0) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        doc = status(client, task_id)
        return doc if doc["status"] in wanted else None

    result: dict[str, Any] = wait_until(reached, timeout)
    return result


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Starts the service on FakePipeline as a real process on a loopback port, in its own
    process group (so kill -9 of the group takes its workers too); stops what is left after."""
    started: list[subprocess.Popen[bytes]] = []

    def start(port: int, **env: str) -> subprocess.Popen[bytes]:
        environment = {
            **os.environ,
            "API_KEYS": API_KEY,
            "UPLOAD_DIR": str(tmp_path / "uploads"),
            "MODEL_CACHE_DIR": str(tmp_path / "cache"),
            "DATA_DIR": str(tmp_path / "data"),
            "MAX_CONCURRENT_TASKS": "1",
            **env,
        }
        command = [sys.executable, "-m", "uvicorn", "tests.fakes:fake_app", "--factory"]
        command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        process = subprocess.Popen(command, cwd=ROOT, env=environment, start_new_session=True)
        started.append(process)
        wait_until(lambda: _loaded(process, port), timeout=30)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()  # the server stops its own workers
            process.wait(15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever of this group outlived it


def _loaded(process: subprocess.Popen[bytes], port: int) -> bool:
    assert process.poll() is None, "the service exited"
    try:
        health = httpx.get(f"http://127.0.0.1:{port}/health", headers=AUTH, timeout=1)
    except httpx.TransportError:
        return False
    return bool(health.json()["model_loaded"])


MB = 1024 * 1024


@dataclass
class AudioServer:
    """A loopback HTTP server with a few paths, some of them hostile."""

    port: int
    audio: bytes
    release: threading.Event = field(default_factory=threading.Event)
    hosts: list[str] = field(default_factory=list)
    accepted_encodings: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def audio_server(short_speech: Path) -> Iterator[AudioServer]:
    state = AudioServer(port=free_port(), audio=short_speech.read_bytes())

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hosts.append(self.headers["host"])
            state.accepted_encodings.append(self.headers.get("accept-encoding", ""))
            parts = urlsplit(self.path)
            query = {name: values[0] for name, values in parse_qs(parts.query).items()}
            match parts.path:
                case "/speech.wav":
                    self._send(200, state.audio, "audio/wav")
                case "/page":
                    self._send(200, b"<!doctype html><title>Sign in</title>" * 100, "text/html; charset=utf-8")
                case "/page-as-audio":
                    self._send(200, b"<!doctype html><title>Sign in</title>" * 100, "audio/mpeg")
                case "/huge":  # declares its size
                    self._send(200, b"\0" * (2 * MB), "audio/wav")
                case "/huge-chunked":  # does not: counted as it arrives
                    self._chunked(b"\0" * (64 * 1024), 40)
                case "/bomb":  # about 2 kB that decode to 1 GiB
                    self._send(200, gzip_bomb(layers=2), "audio/wav", encoding="gzip, gzip")
                case "/gzipped":  # real audio, compressed in transfer
                    self._send(200, gzip.compress(state.audio), "audio/wav", encoding="gzip")
                case "/missing":
                    self._send(404, b"not here", "text/plain")
                case "/redirect":
                    self.send_response(302)
                    self.send_header("location", query["to"])
                    self.send_header("content-length", "0")
                    self.end_headers()
                case "/loop":
                    self.send_response(302)
                    self.send_header("location", "/loop")
                    self.send_header("content-length", "0")
                    self.end_headers()
                case "/stall":  # half the audio, then waits until the test releases it
                    half = len(state.audio) // 2
                    self.send_response(200)
                    self.send_header("content-type", "audio/wav")
                    self.send_header("content-length", str(len(state.audio)))
                    self.end_headers()
                    self.wfile.write(state.audio[:half])
                    self.wfile.flush()
                    state.release.wait(30)
                    self.wfile.write(state.audio[half:])

        def _send(self, code: int, body: bytes, media_type: str, encoding: str | None = None) -> None:
            self.send_response(code)
            self.send_header("content-type", media_type)
            if encoding:
                self.send_header("content-encoding", encoding)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _chunked(self, chunk: bytes, count: int) -> None:
            self.send_response(200)
            self.send_header("content-type", "audio/wav")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            try:
                for _ in range(count):
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass  # the client hung up at its limit, as it should

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", state.port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    state.release.set()
    server.shutdown()
    thread.join(5)
