"""One key against the rest: body limits on routes without audio, the per-key caps, and enrolment's bounds.

Each test shows the refusal and that another key is still served; the attack suite
(tests/attacks/test_one_key.py) runs the same cases against the server process at scale.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.voices.enrollment import FairTurns
from tests.api.conftest import AUTH, upload, wait_for_status, wait_until
from tests.conftest import Deadline

OTHER = {"X-API-Key": "second-key"}
MB = 1024 * 1024
FILE_PART = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'


def _reply(port: int, head: str, body: bytes = b"", timeout: float = 5) -> str:
    """Send a request head (and the start of a body), and read the answer that comes without the rest."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(head.encode() + body)
        reply = b""
        deadline = Deadline(timeout, "the whole answer")
        while not reply.endswith(b"}"):
            deadline.check(reply)
            chunk = connection.recv(65536)
            if not chunk:
                break
            reply += chunk
    return reply.decode(errors="replace")


def _head(method: str, path: str, key: str, length: int, content_type: str) -> str:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {key}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
    )


def _completed(client: TestClient, audio: Path) -> str:
    task_id = upload(client, audio)["task_id"]
    assert wait_for_status(client, task_id, {"completed", "failed"})["status"] == "completed"
    return str(task_id)


# Body limits


def test_a_json_body_over_max_body_kb_is_413_before_it_is_read(live_server: Callable[..., int]) -> None:
    """A 50 MB rename of an unknown task, declared: refused from its head, never parsed."""
    port = live_server(max_body_kb=64)
    head = _head("PATCH", "/api/v1/transcribe/tasks/no-such-task/speakers", "test-key", 50 * MB, "application/json")
    reply = _reply(port, head, b'{"SPEAKER_00": "')
    assert reply.startswith("HTTP/1.1 413"), reply
    assert "limit of 64 KB (MAX_BODY_KB)" in reply


def test_a_chunked_json_body_is_cut_off_at_max_body_kb(client: TestClient) -> None:
    def body() -> Iterator[bytes]:  # sent without a Content-Length: counted as it arrives
        yield b'{"SPEAKER_00": "'
        for _ in range(100):
            yield b"a" * 65536
        yield b'"}'

    response = client.patch(
        "/api/v1/transcribe/tasks/no-such-task/speakers",
        headers={**AUTH, "Content-Type": "application/json"},
        content=body(),
    )
    assert response.status_code == 413, response.text
    assert "MAX_BODY_KB" in response.json()["detail"]


def test_a_form_without_a_file_to_an_audio_route_is_bounded_by_max_body_kb(client: TestClient) -> None:
    """Only multipart bodies (which carry the file) may be as large as an upload."""
    for path in ("/api/v1/transcribe/upload", "/v1/audio/transcriptions", "/api/v1/speakers"):
        response = client.post(path, headers=AUTH, data={"prompt": "p" * 100_000})
        assert response.status_code == 413, (path, response.text)
        assert "MAX_BODY_KB" in response.text


def test_the_model_field_is_not_echoed_back_whole(client: TestClient, short_speech: Path) -> None:
    with short_speech.open("rb") as audio:
        response = client.post(
            "/v1/audio/transcriptions", headers=AUTH, files={"file": audio}, data={"model": "m" * 60_000}
        )
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail.startswith("model: 'mmm")
    assert len(detail) < 500


# Per-key caps


def test_event_streams_per_key_are_capped(live_server: Callable[..., int], short_speech: Path) -> None:
    port = live_server({"FAKE_STUCK_NAME": "stuck.wav"}, max_streams_per_key=2)
    base = f"http://127.0.0.1:{port}"
    tasks = {}
    for key, headers in (("mine", AUTH), ("other", OTHER)):
        answer = httpx.post(
            f"{base}/api/v1/transcribe/upload",
            headers=headers,
            files={"file": ("stuck.wav", short_speech.read_bytes())},
        )
        assert answer.status_code == 202, answer.text
        tasks[key] = answer.json()["task_id"]

    def open_stream(stack: ExitStack, key: str, headers: dict[str, str]) -> httpx.Response:
        client = stack.enter_context(httpx.Client(base_url=base, timeout=10))
        return stack.enter_context(client.stream("GET", f"/api/v1/transcribe/events/{tasks[key]}", headers=headers))

    with ExitStack() as held:
        streams = [open_stream(held, "mine", AUTH) for _ in range(2)]
        assert [stream.status_code for stream in streams] == [200, 200]
        refused = httpx.get(f"{base}/api/v1/transcribe/events/{tasks['mine']}", headers=AUTH)
        assert refused.status_code == 429, refused.text
        assert "as many event streams open as this server allows (2, MAX_STREAMS_PER_KEY)" in refused.json()["detail"]
        assert refused.headers["retry-after"]
        with ExitStack() as others:  # the other key is not held back by this one's streams
            assert open_stream(others, "other", OTHER).status_code == 200
        assert httpx.get(f"{base}/health", headers=AUTH).status_code == 200
    # The streams were closed: their places are free again.
    with ExitStack() as again:
        wait_until(lambda: open_stream(again, "mine", AUTH).status_code == 200, timeout=10)


def test_enrolments_in_flight_per_key_are_capped_before_the_sample(live_server: Callable[..., int]) -> None:
    port = live_server(max_enrolments_per_key=1)
    head = _head("POST", "/api/v1/speakers", "test-key", 10 * MB, "multipart/form-data; boundary=xyz")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as held:
        held.sendall(head.encode() + FILE_PART)
        # Admitted: its body is awaited. Meanwhile this key's next enrolment is refused from its head …
        reply = _reply(port, head)
        assert reply.startswith("HTTP/1.1 429"), reply
        assert "as many enrolments in flight as this server allows (1, MAX_ENROLMENTS_PER_KEY)" in reply
        # … and another key's is admitted (and answered: it names a task that does not exist).
        other = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/speakers",
            headers=OTHER,
            data={"name": "Bob", "task_id": "no-such-task", "speaker": "SPEAKER_00"},
        )
        assert other.status_code == 404, other.text


def test_a_sample_for_an_unknown_voice_is_404_before_it_is_sent(
    live_server: Callable[..., int], settings_dir: Path
) -> None:
    port = live_server()
    path = "/api/v1/speakers/no-such-voice/samples"
    head = _head("POST", path, "test-key", 10 * MB, "multipart/form-data; boundary=xyz")
    reply = _reply(port, head, FILE_PART + b"\0" * 65536)
    assert reply.startswith("HTTP/1.1 404"), reply
    assert "No voice with id 'no-such-voice'" in reply
    assert "connection: close" in reply.lower()
    assert not any((settings_dir / "uploads").iterdir())  # nothing of the sample was stored


@pytest.fixture
def settings_dir(tmp_path: Path) -> Path:
    """Where make_settings puts UPLOAD_DIR and the rest."""
    return tmp_path


def test_stored_tasks_per_key_count_failed_ones(make_client: Callable[..., TestClient], short_speech: Path) -> None:
    client = make_client({"FAKE_MODE": "fail"}, max_stored_tasks_per_key=2)
    failed = []
    for _ in range(2):
        task_id = upload(client, short_speech)["task_id"]
        assert wait_for_status(client, task_id, {"completed", "failed"})["status"] == "failed"
        failed.append(task_id)
    with short_speech.open("rb") as audio:
        refused = client.post("/api/v1/transcribe/upload", headers=AUTH, files={"file": audio})
    assert refused.status_code == 429, refused.text
    assert "already has 2 tasks stored, counting completed and failed ones (MAX_STORED_TASKS_PER_KEY)" in refused.text
    with short_speech.open("rb") as audio:
        assert client.post("/api/v1/transcribe/upload", headers=OTHER, files={"file": audio}).status_code == 202
    assert client.delete(f"/api/v1/transcribe/task/{failed[0]}", headers=AUTH).status_code == 200
    upload(client, short_speech)  # room again


# Enrolment


def test_a_sample_over_max_sample_seconds_is_413_before_it_is_embedded(
    make_client: Callable[..., TestClient], short_speech: Path
) -> None:
    client = make_client(max_sample_seconds=1)
    with short_speech.open("rb") as audio:
        response = client.post("/api/v1/speakers", headers=AUTH, data={"name": "Alice"}, files={"file": audio})
    assert response.status_code == 413, response.text
    assert "(MAX_SAMPLE_SECONDS)" in response.json()["detail"]
    assert client.app.state.sample_embedder._pool is None  # type: ignore[attr-defined]  # never started


def test_concurrent_enrolments_make_one_voice_of_a_name(
    make_client: Callable[..., TestClient], short_speech: Path
) -> None:
    # SQLite, whose calls run on a thread: the requests interleave at every store call.
    client = make_client(task_store="sqlite", max_enrolments_per_key=10)
    task_id = _completed(client, short_speech)
    start = threading.Barrier(10)

    def enrol(_: int) -> int:
        start.wait()
        form = {"name": "Dup", "task_id": task_id, "speaker": "SPEAKER_00"}
        return client.post("/api/v1/speakers", headers=AUTH, data=form).status_code

    with ThreadPoolExecutor(10) as pool:
        answers = sorted(pool.map(enrol, range(10)))
    assert answers == [201] + [409] * 9
    assert [voice["name"] for voice in client.get("/api/v1/speakers", headers=AUTH).json()["speakers"]] == ["Dup"]


def test_keys_take_turns_at_the_enrolment_process() -> None:
    """A key's second sample waits behind another key's first, whichever came first."""
    order: list[str] = []

    async def scenario() -> None:
        turns = FairTurns()
        release = asyncio.Event()

        async def sample(owner: str, name: str, hold: bool = False) -> None:
            async with turns.turn(owner):
                order.append(name)
                if hold:
                    await release.wait()

        first = asyncio.create_task(sample("a", "a1", hold=True))
        await asyncio.sleep(0)  # a1 holds the turn
        waiting = [asyncio.create_task(sample("a", "a2")), asyncio.create_task(sample("a", "a3"))]
        await asyncio.sleep(0)
        waiting.append(asyncio.create_task(sample("b", "b1")))
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(first, *waiting)

    asyncio.run(scenario())
    assert order == ["a1", "b1", "a2", "a3"]


# Names and what any key may see


def test_speaker_names_cannot_add_srt_cues_or_tsv_rows(client: TestClient, short_speech: Path) -> None:
    task_id = _completed(client, short_speech)
    base = f"/api/v1/transcribe/result/{task_id}"
    before = {fmt: client.get(base, params={"format": fmt}, headers=AUTH).text for fmt in ("srt", "tsv")}
    injected = "Alice\n\n99\n00:00:00,000 --> 00:09:00,000\nInjected\tcell\r\nrow"
    renamed = client.patch(f"/api/v1/transcribe/tasks/{task_id}/speakers", headers=AUTH, json={"SPEAKER_00": injected})
    assert renamed.status_code == 200, renamed.text
    one_line = "Alice 99 00:00:00,000 --> 00:09:00,000 Injected cell row"
    assert {entry["speaker"] for entry in renamed.json()["speakers"]} == {one_line, "SPEAKER_01"}
    srt = client.get(base, params={"format": "srt"}, headers=AUTH).text
    tsv = client.get(base, params={"format": "tsv"}, headers=AUTH).text
    assert one_line in srt
    assert srt.count("\n\n") == before["srt"].count("\n\n")  # as many cues as before
    assert len(tsv.splitlines()) == len(before["tsv"].splitlines())
    assert {len(row.split("\t")) for row in tsv.splitlines()} == {len(before["tsv"].splitlines()[0].split("\t"))}
    too_long = client.patch(
        f"/api/v1/transcribe/tasks/{task_id}/speakers", headers=AUTH, json={"SPEAKER_01": "b" * 101}
    )
    assert too_long.status_code == 422
    assert "1 to 100 characters" in too_long.json()["detail"]


def test_health_and_metrics_show_no_figures_of_any_one_key(client: TestClient, short_speech: Path) -> None:
    """Aggregate queue counts only: nothing there is labelled by, or counts for, a key."""
    _completed(client, short_speech)
    health: dict[str, Any] = client.get("/health", headers=OTHER).json()
    assert set(health["queue"]) == {"pending", "processing"}
    assert "test-key" not in str(health)
    assert "tasks" not in health
    samples = [line for line in client.get("/metrics", headers=OTHER).text.splitlines() if "{" in line]
    labels = {
        label.split("=")[0] for line in samples for label in line[line.index("{") + 1 : line.index("}")].split(",")
    }
    assert labels <= {"status", "stage", "le"}, labels
