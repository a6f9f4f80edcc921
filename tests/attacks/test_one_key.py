"""One key against the rest: huge JSON bodies, event streams, enrolments and failing tasks by one key,
while another key is served.

"Served meanwhile" is shown by order, never by a time bound: the other key's answer arrives while the
attacker's requests are still open (their sockets hold no answer yet) or before the attacker's last
answer. The figures printed are what `docs/security.md` reports.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.attacks.conftest import FILE_PART, MB, Service, read_reply, upload_head
from tests.conftest import Deadline, free_port, speak

MEMORY_BOUND_MB = 50
OTHER = {"X-API-Key": "bystander"}


def _answered(connection: socket.socket) -> bool:
    """Whether the server has sent anything (an answer, or the end of the connection) on it yet."""
    return bool(select.select([connection], [], [], 0)[0])


def _status_line(connection: socket.socket) -> str:
    connection.settimeout(10)
    head = b""
    while b"\r\n" not in head:
        chunk = connection.recv(4096)
        if not chunk:
            break
        head += chunk
    return head.split(b"\r\n", 1)[0].decode(errors="replace")


@contextlib.contextmanager
def _stalling_host() -> Iterator[str]:
    """A loopback host that accepts connections and never answers: an `audio_url` there keeps its task pending."""
    listener = socket.create_server(("127.0.0.1", free_port()))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/never.wav"
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        listener.close()


def test_a_huge_json_body_is_refused_as_it_arrives(lab: Service) -> None:
    """A 300 MB speaker rename, declared or chunked, to a task that does not exist: 413 at once, or
    after MAX_BODY_KB has arrived, never parsed; another key is answered while the chunked one is
    still being sent."""
    path = "/api/v1/transcribe/tasks/no-such-task/speakers"
    head = f"PATCH {path} HTTP/1.1\r\nHost: localhost\r\nX-API-Key: renamer\r\nContent-Type: application/json\r\n"
    with (
        lab.peak_growth("a declared 300 MB JSON body") as growth,
        socket.create_connection(("127.0.0.1", lab.port), timeout=30) as connection,
    ):
        started = time.monotonic()
        connection.sendall(f"{head}Content-Length: {300 * MB}\r\n\r\n".encode() + b'{"SPEAKER_00": "')
        declared = read_reply(connection)
        took = time.monotonic() - started
    print(f"[attack]   {declared[:12]} after {took:.2f} s")
    assert declared.startswith("HTTP/1.1 413"), declared
    assert "MAX_BODY_KB" in declared
    assert growth[0] < MEMORY_BOUND_MB

    chunk = b"a" * 32 * 1024
    sent = 0
    with (
        lab.peak_growth("a chunked 300 MB JSON body") as growth,
        socket.create_connection(("127.0.0.1", lab.port), timeout=30) as connection,
    ):
        connection.sendall(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode())
        connection.sendall(b'10\r\n{"SPEAKER_00": "\r\n' + f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        sent = len(chunk)
        lab.bystander_served()  # while the attacker's request is under way …
        assert not _answered(connection)  # … and not yet answered
        with contextlib.suppress(OSError):  # the server answers and hangs up part-way: as it should
            while sent < 300 * MB and not _answered(connection):
                connection.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                sent += len(chunk)
        chunked = read_reply(connection)
    print(f"[attack]   {chunked[:12]} after {sent / 1024:.0f} kB sent")
    assert chunked.startswith("HTTP/1.1 413"), chunked
    assert sent < 10 * MB
    assert growth[0] < MEMORY_BOUND_MB


def test_event_streams_of_one_key_leave_room_for_the_others(lab: Service, short_speech: Path) -> None:
    """200 event streams by one key on its own pending task, past MAX_CONNECTIONS (150 here):
    MAX_STREAMS_PER_KEY (20) are held, the rest refused with 429, and another key's /health,
    /live and upload are answered while the 20 are open."""
    key = {"X-API-Key": "streamer"}
    with _stalling_host() as never:
        created = httpx.post(lab.url("/api/v1/transcribe/upload"), headers=key, data={"audio_url": never})
        assert created.status_code == 202, created.text
        path = f"/api/v1/transcribe/events/{created.json()['task_id']}"
        request = f"GET {path} HTTP/1.1\r\nHost: localhost\r\nX-API-Key: streamer\r\n\r\n".encode()
        with lab.peak_growth("200 event streams by one key") as growth, contextlib.ExitStack() as stack:
            held: list[socket.socket] = []
            refused: list[str] = []
            for _ in range(200):
                connection = stack.enter_context(socket.create_connection(("127.0.0.1", lab.port), timeout=10))
                connection.sendall(request)
                status = _status_line(connection)
                if status == "HTTP/1.1 200 OK":
                    held.append(connection)
                else:
                    refused.append(status)
                    connection.close()
            health = httpx.get(lab.url("/health"), headers=OTHER, timeout=10)
            live = httpx.get(lab.url("/live"), headers=OTHER, timeout=10)
            with short_speech.open("rb") as audio:
                other = httpx.post(
                    lab.url("/api/v1/transcribe/upload"), headers={"X-API-Key": "neighbour"}, files={"file": audio}
                )
            # Answered while the attacker's streams were open: none of them has ended.
            ended = [connection for connection in held if _ended(connection)]
    print(
        f"[attack]   {len(held)} held, {len(refused)} × {refused[0] if refused else '-'}; meanwhile another key's "
        f"/health {health.status_code}, /live {live.status_code}, upload {other.status_code}"
    )
    assert len(held) == 20, refused[:3]
    assert set(refused) == {"HTTP/1.1 429 Too Many Requests"}
    assert (health.status_code, live.status_code, other.status_code) == (200, 200, 202)
    assert not ended
    assert growth[0] < MEMORY_BOUND_MB


def _ended(connection: socket.socket) -> bool:
    """Whether the server closed the connection (what it sent so far is read and dropped)."""
    connection.setblocking(False)
    try:
        while chunk := connection.recv(65536):
            del chunk
    except BlockingIOError:
        return False
    return True


def test_enrolments_of_one_key_leave_room_for_the_others(lab: Service) -> None:
    """Ten parallel 50 MB enrolments by one key: MAX_ENROLMENTS_PER_KEY (2) are admitted, eight are
    refused from their heads; another key's enrolment is answered while the two are still open; a
    sample for a voice the key does not have is refused from its head; nothing of any of them stays stored."""
    uploads_before = set(lab.upload_dir.iterdir())
    with lab.peak_growth("10 parallel 50 MB enrolments by one key") as growth, contextlib.ExitStack() as stack:
        connect = ("127.0.0.1", lab.port)
        connections = [stack.enter_context(socket.create_connection(connect, timeout=10)) for _ in range(10)]
        for connection in connections:
            connection.sendall(upload_head("/api/v1/speakers", "enroller", 50 * MB) + FILE_PART + b"\0" * 1024)
        statuses = {connection: _status_line(connection) for connection in connections if _wait_answered(connection)}
        admitted = [connection for connection in connections if connection not in statuses]
        other = httpx.post(
            lab.url("/api/v1/speakers"),
            headers=OTHER,
            data={"name": "Bob", "task_id": "no-such-task", "speaker": "SPEAKER_00"},
            timeout=10,
        )
        still_open = [connection for connection in admitted if not _answered(connection)]
    print(
        f"[attack]   {len(statuses)} × {set(statuses.values())} from the head, {len(admitted)} admitted; "
        f"meanwhile another key's enrolment: {other.status_code}"
    )
    assert set(statuses.values()) == {"HTTP/1.1 429 Too Many Requests"}
    assert len(statuses) == 8
    assert other.status_code == 404, other.text  # admitted and answered: the task it names does not exist
    assert len(still_open) == 2
    assert growth[0] < MEMORY_BOUND_MB

    with socket.create_connection(("127.0.0.1", lab.port), timeout=10) as connection:
        connection.sendall(upload_head("/api/v1/speakers/no-such-voice/samples", "renamer", 50 * MB) + FILE_PART)
        unknown = read_reply(connection, timeout=10)
    assert unknown.startswith("HTTP/1.1 404"), unknown
    # The two admitted enrolments were abandoned mid-body: the server removes their partial files once it
    # reads the disconnect, which may come a moment after the 404 above.
    deadline = Deadline(10, "the abandoned enrolments' partial uploads to be removed")
    while not (left := set(lab.upload_dir.iterdir())) <= uploads_before:
        deadline.check(left - uploads_before)
        time.sleep(0.05)


def _wait_answered(connection: socket.socket, seconds: float = 1.0) -> bool:
    """Whether the server answers within `seconds`: a refusal from the head comes at once, an admitted
    request waits for its body (and is cut off after BODY_GRACE_SECONDS, 2 here, which is longer)."""
    return bool(select.select([connection], [], [], seconds)[0])


def test_failed_tasks_count_against_the_stored_tasks_of_a_key(lab: Service, short_speech: Path) -> None:
    """A key whose `audio_url`s all fail: once it has MAX_STORED_TASKS_PER_KEY (20 here) failed tasks
    kept, its next task is refused with 429; another key's upload is accepted."""
    key = {"X-API-Key": "failer"}
    nowhere = f"http://127.0.0.1:{free_port()}/missing.wav"  # nothing listens: each download fails at once
    answers = []
    with httpx.Client(base_url=lab.url(""), headers=key, timeout=10) as client:
        for _ in range(21):
            created = client.post("/api/v1/transcribe/upload", data={"audio_url": nowhere})
            answers.append(created.status_code)
            if created.status_code != 202:
                break
            deadline = Deadline(10, "the download to fail")
            while (state := client.get(created.headers["location"]).json()["status"]) != "failed":
                deadline.check(state)
                time.sleep(0.02)
        refused = created
    with short_speech.open("rb") as audio:
        other = httpx.post(
            lab.url("/api/v1/transcribe/upload"), headers={"X-API-Key": "neighbour"}, files={"file": audio}
        )
    print(
        f"[attack]   {answers.count(202)} tasks failed and kept, then {refused.status_code}; "
        f"another key's upload: {other.status_code}"
    )
    assert answers == [202] * 20 + [429]
    assert "MAX_STORED_TASKS_PER_KEY" in refused.json()["detail"]
    assert other.status_code == 202, other.text


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Speech of one voice: about 35 s and about 6 s."""
    folder = tmp_path_factory.mktemp("samples")
    sentence = "The quick brown fox jumps over the lazy dog while the band plays on the old pier. "
    return speak(sentence * 5, folder / "long.wav"), speak(sentence, folder / "short.wav")


def test_one_keys_long_samples_hold_up_anothers_by_one_sample_at_most(lab: Service, samples: tuple[Path, Path]) -> None:
    """One key sends two long samples, another key a short one while the first is embedded: the keys take
    turns at the enrolment process, so the other key's voice is enrolled before the first key's second."""
    long_sample, short_sample = samples
    finished: list[str] = []

    def enrol(name: str, key: str, sample: Path) -> int:
        with sample.open("rb") as audio:
            answer = httpx.post(
                lab.url("/api/v1/speakers"),
                headers={"X-API-Key": key},
                data={"name": name},
                files={"file": audio},
                timeout=300,
            )
        finished.append(name)
        return answer.status_code

    workers = _children(lab)  # the enrolment process starts on the first sample: in this test
    started = time.monotonic()
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(enrol, "Long 1", "enroller", long_sample)
        deadline = Deadline(60, "the enrolment process to start")  # the first sample holds it from then on
        while _children(lab) <= workers:
            deadline.check()
            time.sleep(0.05)
        second = pool.submit(enrol, "Long 2", "enroller", long_sample)
        other_sent = time.monotonic()
        done_before_other = len(finished)
        other = pool.submit(enrol, "Short", "bystander", short_sample)
        waited = other.result() and time.monotonic() - other_sent
        answers = (first.result(), second.result(), other.result())
    print(
        f"[attack]   answered in the order {finished}; the other key's 6-s sample took {waited:.1f} s, "
        f"all three {time.monotonic() - started:.1f} s (the first includes loading the encoder)"
    )
    assert answers == (201, 201, 201)
    # While the short sample waited, the other key finished one sample at most: the one being embedded
    # when it came (then "Long 2" waits its turn), or, if that one had already ended, "Long 2".
    held_up_by = finished[done_before_other : finished.index("Short")]
    assert len(held_up_by) <= 1, finished


def _children(service: Service) -> set[str]:
    """The ids of the API process's child processes (its workers, and the enrolment process once started)."""
    tasks = Path(f"/proc/{service.process.pid}/task").iterdir()
    return {child for task in tasks for child in (task / "children").read_text().split()}
