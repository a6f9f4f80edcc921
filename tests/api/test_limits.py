"""Every limit refuses with a clear problem document, and the service goes on answering."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from tests.api.conftest import AUTH, make_settings, upload, wait_for_status, wait_until
from tests.conftest import Deadline

OTHER = {"X-API-Key": "second-key"}

AUDIO_ROUTES = ["/api/v1/transcribe/upload", "/v1/audio/transcriptions", "/v1/audio/translations"]


def _large_upload_headers(path: str, key: str = AUTH["X-API-Key"]) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\n"
        "Host: localhost\r\n"
        f"X-API-Key: {key}\r\n"
        "Content-Type: multipart/form-data; boundary=xyz\r\n"
        f"Content-Length: {200 * 1024 * 1024}\r\n\r\n"
    ).encode()


def _announce_large_upload(port: int, path: str = AUDIO_ROUTES[0]) -> str:
    """Send only the headers of a 200 MB upload and return the server's whole reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(_large_upload_headers(path))
        reply = connection.recv(4096).decode()
        deadline = Deadline(10, "the end of the JSON reply")
        while "}" not in reply:  # the body may come in a second packet
            deadline.check(reply)
            more = connection.recv(4096).decode()
            assert more, f"the server closed the connection mid-reply: {reply!r}"
            reply += more
    return reply


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # A small upload limit, for the tests that upload through `client`.
    return make_settings(tmp_path, max_upload_mb=1)


def test_declared_oversize_body_is_413_before_it_is_sent(live_server: Callable[..., int]) -> None:
    """Claim a 200 MB upload with a good key, send only the headers: 413 comes back anyway."""
    reply = _announce_large_upload(live_server(max_upload_mb=1))
    assert reply.startswith("HTTP/1.1 413"), reply
    assert "application/problem+json" in reply
    assert "limit of 1 MB (MAX_UPLOAD_MB)" in reply


def _chunked_multipart(size: int) -> Iterator[bytes]:
    yield b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'
    for _ in range(size // 65536):
        yield b"\0" * 65536
    yield b"\r\n--xyz--\r\n"


def test_chunked_oversize_body_is_413_and_leaves_no_file(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_upload_mb=1)
    settings = client.app.state.settings  # type: ignore[attr-defined]
    response = client.post(
        "/api/v1/transcribe/upload",
        headers={**AUTH, "Content-Type": "multipart/form-data; boundary=xyz"},
        content=_chunked_multipart(3 * 1024 * 1024),  # no Content-Length: counted as it arrives
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert "MAX_UPLOAD_MB" in response.json()["detail"]
    assert list(settings.upload_dir.iterdir()) == []
    assert client.get("/health", headers=AUTH).status_code == 200


def test_audio_longer_than_the_limit_is_413_naming_it(
    make_client: Callable[..., TestClient], short_speech: Path
) -> None:
    client = make_client(max_audio_seconds=1)
    settings = client.app.state.settings  # type: ignore[attr-defined]
    with short_speech.open("rb") as audio:
        response = client.post("/api/v1/transcribe/upload", headers=AUTH, files={"file": audio})
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    detail = response.json()["detail"]
    assert "this server accepts at most 1 s (MAX_AUDIO_SECONDS=1)" in detail, detail
    assert list(settings.upload_dir.iterdir()) == []


def test_full_queue_is_503_with_retry_after(make_client: Callable[..., TestClient], short_speech: Path) -> None:
    client = make_client({"FAKE_STEP_SECONDS": "0.1"}, max_queue_size=1)
    running = upload(client, short_speech)["task_id"]
    wait_for_status(client, running, {"processing"})
    waiting = upload(client, short_speech)["task_id"]
    with short_speech.open("rb") as audio:
        refused = client.post("/api/v1/transcribe/upload", headers=OTHER, files={"file": audio})
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "30"
    assert refused.headers["content-type"] == "application/problem+json"
    assert "MAX_QUEUE_SIZE" in refused.json()["detail"]
    settings = client.app.state.settings  # type: ignore[attr-defined]
    assert {path.name for path in settings.upload_dir.iterdir()} <= {running, waiting}
    for task_id in (running, waiting):
        wait_for_status(client, task_id, {"completed"})


def test_too_many_active_tasks_for_one_key_is_429(make_client: Callable[..., TestClient], short_speech: Path) -> None:
    client = make_client({"FAKE_STEP_SECONDS": "0.1"}, max_tasks_per_key=2)
    first = upload(client, short_speech)["task_id"]
    upload(client, short_speech)
    with short_speech.open("rb") as audio:
        refused = client.post("/api/v1/transcribe/upload", headers=AUTH, files={"file": audio})
    assert refused.status_code == 429
    assert "MAX_TASKS_PER_KEY" in refused.json()["detail"]
    # Another key is not held back by this one's tasks.
    with short_speech.open("rb") as audio:
        assert client.post("/api/v1/transcribe/upload", headers=OTHER, files={"file": audio}).status_code == 202
    # Once one ends, the key may upload again.
    wait_for_status(client, first, {"completed"})
    upload(client, short_speech)


@pytest.mark.parametrize("standby_workers", [0, 1])
def test_a_stage_past_its_timeout_fails_the_task_naming_the_stage(
    make_client: Callable[..., TestClient], short_speech: Path, standby_workers: int
) -> None:
    client = make_client({"FAKE_MODE": "stubborn"}, stage_timeout_seconds=1, standby_workers=standby_workers)
    task_id = upload(client, short_speech)["task_id"]
    failed = wait_for_status(client, task_id, {"failed"}, timeout=15)
    assert failed["error"] == (
        "The decoding stage took longer than the server's limit of 1 s (STAGE_TIMEOUT_SECONDS); try a shorter file."
    )
    settings = client.app.state.settings  # type: ignore[attr-defined]
    assert not (settings.upload_dir / task_id).exists()
    # The killed worker is replaced: the service loads its model again and keeps answering.
    wait_until(lambda: client.get("/health", headers=AUTH).json()["model_loaded"])


def test_finished_tasks_expire_after_their_ttl(make_client: Callable[..., TestClient], short_speech: Path) -> None:
    client = make_client(task_ttl_hours=1 / 3600)  # one second
    task_id = upload(client, short_speech)["task_id"]
    wait_for_status(client, task_id, {"completed"})
    ended = time.monotonic()
    wait_until(lambda: client.get(f"/api/v1/transcribe/status/{task_id}", headers=AUTH).status_code == 404, 10)
    assert time.monotonic() - ended < 3
    response = client.get(f"/api/v1/transcribe/result/{task_id}", headers=AUTH)
    assert response.status_code == 404
    assert "expired (TASK_TTL_HOURS)" in response.json()["detail"]
    assert client.get("/api/v1/transcribe/tasks", headers=AUTH).json()["total"] == 0


def test_a_full_queue_is_answered_before_the_upload_body_is_sent(
    serve: Callable[..., subprocess.Popen[bytes]], short_speech: Path
) -> None:
    """Claim a 200 MB upload while the queue is full: 503 comes back from the headers alone."""
    port = 8104  # this suite's servers use 8100-8109 on loopback
    serve(port, MAX_QUEUE_SIZE="1", FAKE_STEP_SECONDS="0.2")
    base = f"http://127.0.0.1:{port}/api/v1/transcribe"

    def submit() -> str:
        with short_speech.open("rb") as audio:
            response = httpx.post(f"{base}/upload", headers=AUTH, files={"file": audio})
        assert response.status_code == 202, response.text
        return str(response.json()["task_id"])

    running = submit()
    wait_until(lambda: httpx.get(f"{base}/status/{running}", headers=AUTH).json()["status"] == "processing")
    submit()  # waiting: the queue is full
    reply = _announce_large_upload(port)
    head = reply.lower()
    assert reply.startswith("HTTP/1.1 503"), reply
    assert "retry-after: 30" in head
    assert "application/problem+json" in head
    assert "MAX_QUEUE_SIZE" in reply


def test_every_audio_route_refuses_a_key_at_its_task_limit_before_the_body(
    live_server: Callable[..., int], short_speech: Path
) -> None:
    port = live_server({"FAKE_STEP_SECONDS": "0.5"}, max_tasks_per_key=1)
    with short_speech.open("rb") as audio:
        running = httpx.post(f"http://127.0.0.1:{port}{AUDIO_ROUTES[0]}", headers=AUTH, files={"file": audio})
    assert running.status_code == 202, running.text
    for path in AUDIO_ROUTES:
        reply = _announce_large_upload(port, path)
        assert reply.startswith("HTTP/1.1 429"), (path, reply)
        assert "retry-after: 30" in reply.lower()
        assert "MAX_TASKS_PER_KEY" in reply


def test_uploads_in_progress_per_key_are_capped_before_the_body(
    live_server: Callable[..., int], short_speech: Path, tmp_path: Path
) -> None:
    port = live_server(max_uploads_per_key=1)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sending:
        # The file part begins, and then nothing more, yet: once its file is in UPLOAD_DIR, it was admitted.
        file_part = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF'
        sending.sendall(_large_upload_headers(AUDIO_ROUTES[1]) + file_part)
        wait_until(lambda: any((tmp_path / "uploads").iterdir()))
        for path in AUDIO_ROUTES:
            reply = _announce_large_upload(port, path)
            assert reply.startswith("HTTP/1.1 429"), (path, reply)
            assert "retry-after: 30" in reply.lower()
            assert "as many uploads at once as this server allows (1, MAX_UPLOADS_PER_KEY)" in reply
        # Another key is not held back by this one's uploads.
        with short_speech.open("rb") as audio:
            other = httpx.post(f"http://127.0.0.1:{port}{AUDIO_ROUTES[0]}", headers=OTHER, files={"file": audio})
        assert other.status_code == 202, other.text
    # The client left: its slot is free again.
    audio = short_speech.read_bytes()
    url = f"http://127.0.0.1:{port}{AUDIO_ROUTES[0]}"
    wait_until(lambda: httpx.post(url, headers=AUTH, files={"file": ("short.wav", audio)}).status_code == 202)


def _reply(connection: socket.socket) -> str:
    """Everything the server sends until it closes the connection."""
    reply = b""
    while chunk := connection.recv(4096):
        reply += chunk
    return reply.decode()


def test_a_stalled_body_is_cut_off_with_408(live_server: Callable[..., int], short_speech: Path) -> None:
    port = live_server(body_min_rate_kb=1, body_grace_seconds=1)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(_large_upload_headers(AUDIO_ROUTES[0]).replace(b"209715200", b"1048576"))
        connection.sendall(b"--xyz\r\n")  # and then nothing
        reply = _reply(connection)
    assert reply.startswith("HTTP/1.1 408"), reply
    assert "minimum of 1 KB/s (BODY_MIN_RATE_KB) after its first 1 s (BODY_GRACE_SECONDS)" in reply
    assert 1 <= time.monotonic() - started < 8
    # A client at a normal pace is served.
    with short_speech.open("rb") as audio:
        response = httpx.post(f"http://127.0.0.1:{port}{AUDIO_ROUTES[0]}", headers=AUTH, files={"file": audio})
    assert response.status_code == 202, response.text


def test_a_trickling_body_is_cut_off_once_behind_the_minimum_pace(live_server: Callable[..., int]) -> None:
    port = live_server(body_min_rate_kb=1, body_grace_seconds=1)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(_large_upload_headers(AUDIO_ROUTES[1]).replace(b"209715200", b"1048576"))
        connection.sendall(b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n')
        connection.settimeout(0.2)
        reply = ""
        for _ in range(100):  # a byte every 0.2 s: 5 B/s
            try:
                connection.sendall(b"\0")
                reply = connection.recv(4096).decode()
            except TimeoutError:
                continue
            except OSError:
                break
            break
    assert reply.startswith("HTTP/1.1 408"), reply


@pytest.mark.parametrize(
    ("fields", "files", "answer", "says"),
    [
        ([(f"junk{i}", "x" * 60_000) for i in range(450)], 1, 400, "Too many fields. Maximum number of fields is 64"),
        ([("model", "e" * 100_000)], 1, 413, "model: this field is longer than the 64 KB a form field may have"),
        ([], 2, 400, "Too many files. Maximum number of files is 1"),
    ],
    ids=["450 fields", "one huge field", "two files"],
)
def test_form_fields_are_bounded_in_number_and_size(
    make_client: Callable[..., TestClient],
    short_speech: Path,
    fields: list[tuple[str, str]],
    files: int,
    answer: int,
    says: str,
) -> None:
    client = make_client()  # MAX_UPLOAD_MB at its default: the form is well under it
    audio = short_speech.read_bytes()
    for path in AUDIO_ROUTES:
        response = client.post(
            path,
            headers=AUTH,
            data=dict(fields),
            files=[("file", (f"{n}.wav", audio)) for n in range(files)],
        )
        assert response.status_code == answer, (path, response.text)
        assert says in response.json()["detail"]
