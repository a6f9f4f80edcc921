"""The seed's production command serves the API (the real tier's server uses `python -m app.main`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, free_port


def _first_health(server: subprocess.Popen[bytes], port: int, failure: str) -> httpx.Response:
    """The first /health answer of a starting server, within a minute."""
    deadline = time.monotonic() + 60
    while True:
        assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", headers={"X-API-Key": "entry-key"})
        except httpx.TransportError:
            assert time.monotonic() < deadline, failure
            time.sleep(0.2)


def test_uvicorn_command_serves_the_app(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "API_KEYS": "entry-key", "UPLOAD_DIR": str(tmp_path), "MAX_CONCURRENT_TASKS": "1"}
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen([*command, "--workers", "1"], cwd=ROOT, env=env, stderr=subprocess.PIPE)
    try:
        response = _first_health(server, port, "uvicorn did not start serving")
        assert response.status_code == 200
        assert response.json()["status"] in ("loading", "ok")
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 401
    finally:
        server.terminate()
        server.wait(30)


def test_serve_arguments_override_the_environment(tmp_path: Path) -> None:
    """`scripts/serve --port N` passes its arguments to `python -m app.main`, which takes them over PORT."""
    port, ignored = free_port(), free_port()
    env = {**os.environ, "API_KEYS": "entry-key", "UPLOAD_DIR": str(tmp_path), "PORT": str(ignored), "HOST": "0.0.0.0"}
    command = [sys.executable, "-m", "app.main", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE)
    try:
        response = _first_health(server, port, "the server did not listen on --port")
        assert response.status_code == 200
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{ignored}/health")
    finally:
        server.terminate()
        server.wait(30)
    assert 'exec .venv/bin/python -m app.main "$@"' in (ROOT / "scripts" / "serve").read_text()
