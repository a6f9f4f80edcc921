"""A Redis that stops answering: the API process keeps answering what does not need it.

The service (TASK_BACKEND=celery, no worker) reaches a real redis-server through a loopback TCP
proxy that can stop forwarding while keeping every connection open, as a hung Redis or a
black-holed network does. While it is stalled, requests that need the store wait on the store's
threads, and must end in 503 once the Redis socket timeout passes; `/live` and an open SSE stream
(its keep-alive pings) must go on meanwhile, and /ready must say the workers cannot be seen. Once
the proxy forwards again, the stream carries on.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis

from app.tasks.coordination import Coordination
from app.tasks.models import TaskStatus
from app.tasks.redis_store import RedisTaskStore
from tests.attacks.conftest import FILE_PART, MB, Service, start_service, upload_head
from tests.conftest import free_port

KEY = {"X-API-Key": "bystander"}
SSE_PING_SECONDS = 15  # app/api/routes/events.py


class StallingProxy:
    """Forwards loopback TCP connections to `target`; `stall()` stops moving bytes, `resume()` moves them again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._moving = threading.Event()
        self._moving.set()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def stall(self) -> None:
        self._moving.clear()

    def resume(self) -> None:
        self._moving.set()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._listener.accept()
                upstream = socket.create_connection(self.target)
                for source, sink in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                self._moving.wait()  # stalled: the bytes wait here, the connection stays open
                sink.sendall(chunk)
        for side in (source, sink):
            with contextlib.suppress(OSError):
                side.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def proxy(redis_url: str) -> Iterator[StallingProxy]:
    host, port = re.match(r"redis://([^:]+):(\d+)", redis_url).groups()  # type: ignore[union-attr]
    stalling = StallingProxy((host, int(port)))
    yield stalling
    stalling.resume()
    stalling.close()


def _live(service: Service) -> bool:
    assert service.process.poll() is None, "the service exited"
    try:
        return httpx.get(service.url("/live"), headers=KEY, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _follow(service: Service, task_id: str, lines: list[tuple[float, str]]) -> None:
    """Read the task's SSE stream into `lines` as (arrival time, line) until it closes."""
    url = service.url(f"/api/v1/transcribe/events/{task_id}")
    with contextlib.suppress(httpx.HTTPError), httpx.stream("GET", url, headers=KEY, timeout=120) as stream:
        for line in stream.iter_lines():
            lines.append((time.monotonic(), line))


def _upload_without_its_body(service: Service) -> bytes:
    """The answer to an upload whose head announces 20 MB, of which only the file part's header is sent:
    it arrives only if the server answers before the body."""
    with socket.create_connection(("127.0.0.1", service.port), timeout=60) as connection:
        connection.sendall(upload_head("/api/v1/transcribe/upload", "bystander", 20 * MB) + FILE_PART)
        reply = b""
        while chunk := connection.recv(65536):
            reply += chunk
            head, separator, body = reply.partition(b"\r\n\r\n")
            length = re.search(rb"^content-length: (\d+)", head, re.IGNORECASE | re.MULTILINE)
            if separator and length and len(body) >= int(length.group(1)):
                break  # the whole answer, while the connection may stay open
        return reply


def test_a_stalled_redis_stalls_neither_live_nor_an_event_stream(
    proxy: StallingProxy, redis_url: str, short_speech: Path, tmp_path: Path
) -> None:
    database = f"redis://127.0.0.1:{proxy.port}/3"
    redis.Redis.from_url(database).flushdb()
    with contextlib.contextmanager(start_service)(
        tmp_path, _live, TASK_BACKEND="celery", REDIS_URL=database
    ) as service:
        with short_speech.open("rb") as audio:
            answer = httpx.post(service.url("/api/v1/transcribe/upload"), headers=KEY, files={"file": audio})
        assert answer.status_code == 202, answer.text
        task_id = answer.json()["task_id"]
        lines: list[tuple[float, str]] = []
        threading.Thread(target=_follow, args=(service, task_id, lines), daemon=True).start()
        deadline = time.monotonic() + 10
        while "event: pending" not in [line for _, line in lines] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "event: pending" in [line for _, line in lines], lines

        proxy.stall()
        stalled_at = time.monotonic()
        # More requests that need the store than it has threads: they queue, the loop does not.
        with ThreadPoolExecutor(24) as pool:
            waiting = [
                pool.submit(httpx.get, service.url(f"/api/v1/transcribe/status/{task_id}"), headers=KEY, timeout=60)
                for _ in range(24)
            ]
            uploading = pool.submit(_upload_without_its_body, service)
            live_seconds, live_before_any_store_answer = [], 0
            while time.monotonic() - stalled_at < SSE_PING_SECONDS + 3:
                started = time.monotonic()
                assert httpx.get(service.url("/live"), headers=KEY, timeout=10).json() == {"alive": True}
                live_seconds.append(time.monotonic() - started)
                live_before_any_store_answer += not any(future.done() for future in waiting)
                time.sleep(0.5)
            pings = [at - stalled_at for at, line in lines if line.startswith(":") and at > stalled_at]
            answers = [future.result() for future in waiting]
            upload_answer = uploading.result()
            ready = httpx.get(service.url("/ready"), headers=KEY, timeout=10)
        codes = sorted({answer.status_code for answer in answers})
        print(
            f"\n[attack] stalled Redis: /live max {max(live_seconds) * 1000:.0f} ms over {len(live_seconds)} calls, "
            f"SSE pings at {[round(ping, 1) for ping in pings]} s, 24 status requests -> {codes}"
        )
        # By order, not by a time bound: /live answered while every request that needs the store still waited.
        assert live_before_any_store_answer, "/live answered while Redis was stalled"
        assert pings, "the event stream kept sending keep-alive pings while Redis was stalled"
        assert codes == [503], "requests that need the store end in 503 once its socket timeout passes"
        assert "cannot be reached" in answers[0].json()["detail"]
        # The answer came though the body never did: the admission check met the stalled store before it.
        assert upload_answer.startswith(b"HTTP/1.1 503 "), upload_answer[:500]
        assert b"cannot be reached" in upload_answer
        assert ready.status_code == 503, "readiness fails while the workers cannot be seen"
        assert "cannot be seen" in ready.json()["detail"]

        proxy.resume()
        # Written as a worker writes it, straight to Redis and holding the task's lease (else the API's sweep
        # would soon requeue it as a dead worker's): the stream opened before the stall carries it.
        client = redis.Redis.from_url(redis_url.replace("/0", "/3"), decode_responses=True)
        lease = Coordination(client).lease(task_id)
        assert lease.acquire(blocking=False)
        RedisTaskStore(client, tmp_path / "uploads").update(
            task_id, status=TaskStatus.PROCESSING, progress=40.0, message="Transcribing speech"
        )
        deadline = time.monotonic() + 15
        while "event: processing" not in [line for _, line in lines] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "event: processing" in [line for _, line in lines], "the stream carried on after the stall"
        status = httpx.get(service.url(f"/api/v1/transcribe/status/{task_id}"), headers=KEY, timeout=30)
        assert status.status_code == 200, status.text
        assert status.json()["progress"] == 40.0
