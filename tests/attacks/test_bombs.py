"""Compressed bombs from hosts a user names: an audio_url answer and a webhook receiver's reply."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import wait_until
from tests.attacks.conftest import Service
from tests.bombs import gzip_bomb
from tests.conftest import free_port

MEMORY_BOUND_MB = 50


@dataclass
class HostileHost:
    """A loopback server whose every answer is a gzip bomb."""

    port: int
    replies_sent: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture(scope="module")
def hostile_host() -> Iterator[HostileHost]:
    state = HostileHost(port=free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # an audio_url: 1 GiB of zeros, gzipped twice (about 2 kB)
            self._bomb(gzip_bomb(layers=2), "gzip, gzip", "audio/wav")

        def do_POST(self) -> None:  # a webhook receiver: 1 GiB of zeros, gzipped once (about 1 MB)
            self.rfile.read(int(self.headers["content-length"]))
            self._bomb(gzip_bomb(), "gzip", "application/json")

        def _bomb(self, body: bytes, encoding: str, media_type: str) -> None:
            self.send_response(200)
            self.send_header("content-type", media_type)
            self.send_header("content-encoding", encoding)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the service may hang up without reading: it should
                self.wfile.write(body)
            state.replies_sent.append(self.command)

        def log_message(self, *args: Any) -> None:
            pass

    gzip_bomb(layers=2)  # made before any request, not while one waits
    server = ThreadingHTTPServer(("127.0.0.1", state.port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    thread.join(5)


def _task(lab: Service, key: str, task_id: str) -> dict[str, Any]:
    response = httpx.get(lab.url(f"/api/v1/transcribe/status/{task_id}"), headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def test_an_audio_url_answering_a_nested_gzip_bomb(lab: Service, hostile_host: HostileHost) -> None:
    key = {"X-API-Key": "bomber"}
    bomb = len(gzip_bomb(layers=2))
    with lab.peak_growth(f"audio_url answering {bomb} bytes of 'gzip, gzip' (1 GiB decoded)") as growth:
        started = time.monotonic()
        response = httpx.post(
            lab.url("/api/v1/transcribe/upload"), headers=key, data={"audio_url": hostile_host.url("/a.wav")}
        )
        assert response.status_code == 202, response.text
        task_id = response.json()["task_id"]
        done = wait_until(lambda: (task := _task(lab, key["X-API-Key"], task_id))["status"] == "failed" and task)
        answered = time.monotonic() - started
        bystander = lab.bystander_served()
    print(f"[attack]   the task failed after {answered:.2f} s; a bystander's /health took {bystander * 1000:.0f} ms")
    assert growth[0] < MEMORY_BOUND_MB
    assert done["error"].startswith("audio_url: the server sent the file compressed (Content-Encoding: gzip, gzip)")
    assert list(lab.upload_dir.iterdir()) == [], "nothing of the download is left"


def test_a_webhook_receiver_answering_a_gzip_bomb(lab: Service, hostile_host: HostileHost, short_speech: Path) -> None:
    key = {"X-API-Key": "hooker"}
    bomb = len(gzip_bomb())
    with lab.peak_growth(f"webhook receiver answering {bomb / 1e6:.1f} MB of gzip (1 GiB decoded)") as growth:
        with short_speech.open("rb") as audio:
            response = httpx.post(
                lab.url("/api/v1/transcribe/upload"),
                headers=key,
                files={"file": audio},
                data={"callback_url": hostile_host.url("/hook")},
            )
        assert response.status_code == 202, response.text
        wait_until(lambda: "POST" in hostile_host.replies_sent)
        time.sleep(1.0)  # time enough to read and decode the reply, were it read
        bystander = lab.bystander_served()
    print(f"[attack]   a bystander's /health took {bystander * 1000:.0f} ms")
    assert growth[0] < MEMORY_BOUND_MB
    assert _task(lab, key["X-API-Key"], response.json()["task_id"])["status"] == "completed"
