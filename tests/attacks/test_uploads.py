"""Parallel uploads by one key, and a key at its task limit, on every route that accepts audio."""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

import httpx

from tests.attacks.conftest import FILE_PART, MB, Service, read_reply, upload_head

MEMORY_BOUND_MB = 50
ROUTES = ["/api/v1/transcribe/upload", "/v1/audio/transcriptions", "/v1/audio/translations"]
SIZE = int(28.8 * MB)


def test_parallel_uploads_by_one_key_are_refused_from_the_head(lab: Service, short_speech: Path) -> None:
    """Eight 28.8 MB uploads at once by one key: MAX_UPLOADS_PER_KEY (2 here) admits two, and the
    other six are answered 429 from their request heads, none of their bodies read."""
    model = b'--xyz\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'  # OpenAI's routes need it
    closing = b"\r\n--xyz--\r\n"
    content = b"\0" * (SIZE - len(model) - len(FILE_PART) - len(closing))  # not audio: refused once probed
    first = 16 * 1024  # little enough that the server has read it all when it refuses and hangs up
    with lab.peak_growth("8 parallel 28.8 MB uploads by one key") as growth, contextlib.ExitStack() as stack:
        uploads = [stack.enter_context(socket.create_connection(("127.0.0.1", lab.port), timeout=30)) for _ in range(8)]
        started = time.monotonic()
        for index, connection in enumerate(uploads):
            connection.sendall(upload_head(ROUTES[index % 3], "uploader", SIZE) + model + FILE_PART + content[:first])
        refused, admitted = [], []
        for connection in uploads:
            connection.settimeout(1)
            try:
                refused.append(connection.recv(65536).decode())
            except TimeoutError:
                admitted.append(connection)
        answered = time.monotonic() - started
        with short_speech.open("rb") as audio:  # another key uploads meanwhile
            other = httpx.post(lab.url(ROUTES[0]), headers={"X-API-Key": "bystander"}, files={"file": audio})
        for connection in admitted:
            connection.sendall(content[first:] + closing)
        finished = [read_reply(connection) for connection in admitted]
    print(f"[attack]   6 × 429 within {answered:.1f} s; another key's upload: {other.status_code}; the two admitted:")
    print(
        f"[attack]   {', '.join(reply[:12] for reply in finished)} once their 28.8 MB of zeros were stored and probed"
    )
    assert len(refused) == 6, refused
    for reply in refused:
        assert reply.startswith("HTTP/1.1 429"), reply
        assert "retry-after: 30" in reply.lower()
        assert "MAX_UPLOADS_PER_KEY" in reply
    assert other.status_code == 202, other.text
    assert [reply[:12] for reply in finished] == ["HTTP/1.1 415"] * 2, finished
    assert growth[0] < MEMORY_BOUND_MB


def test_a_key_at_its_task_limit_is_refused_before_the_body_on_every_route(lab: Service, short_speech: Path) -> None:
    key = {"X-API-Key": "limited"}
    with short_speech.open("rb") as audio:  # MAX_TASKS_PER_KEY is 1 here
        first = httpx.post(lab.url(ROUTES[0]), headers=key, files={"file": audio})
    assert first.status_code == 202, first.text
    for route in ROUTES:
        with socket.create_connection(("127.0.0.1", lab.port), timeout=10) as connection:
            started = time.monotonic()
            connection.sendall(upload_head(route, "limited", SIZE))
            reply = read_reply(connection, timeout=10)
            took = time.monotonic() - started
        print(f"\n[attack] {route} with a 28.8 MB body declared, key at its task limit: {reply[:12]} in {took:.2f} s")
        assert reply.startswith("HTTP/1.1 429"), reply
        assert "MAX_TASKS_PER_KEY" in reply
    task = httpx.get(lab.url(f"/api/v1/transcribe/status/{first.json()['task_id']}"), headers=key).json()
    assert task["status"] in {"pending", "processing"}, "the limit was met while the first task was still active"
