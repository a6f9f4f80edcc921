"""Slow clients against the server alone: request heads sent a line at a time, idle connections,
bodies that trickle or never come, forms of junk fields."""

from __future__ import annotations

import contextlib
import re
import select
import socket
import time
from collections.abc import Iterator

import httpx

from tests.attacks.conftest import FILE_PART, MB, Service, read_reply, upload_head

MEMORY_BOUND_MB = 50
UPLOAD = "/api/v1/transcribe/upload"


@contextlib.contextmanager
def connections(service: Service, count: int) -> Iterator[list[socket.socket]]:
    opened = [socket.create_connection(("127.0.0.1", service.port), timeout=10) for _ in range(count)]
    try:
        yield opened
    finally:
        for connection in opened:
            connection.close()


def test_slow_request_heads_neither_grow_memory_nor_shut_out_others(lab: Service) -> None:
    """The server cannot time out a half-sent head (the proxy does, see test_proxy): it bounds how
    many connections it serves (MAX_CONNECTIONS=150 here), and keeps serving the others."""
    attack = "100 unauthenticated connections sending a header line a second"
    with lab.peak_growth(attack) as growth, connections(lab, 100) as slow:
        for connection in slow:
            connection.sendall(b"POST /api/v1/transcribe/upload HTTP/1.1\r\nHost: localhost\r\n")
        waits = []
        for _ in range(3):
            time.sleep(1)
            for connection in slow:
                connection.sendall(b"X-Slow: 1\r\n")
            waits.append(lab.bystander_served())
        with connections(lab, 60) as more:  # 160 > MAX_CONNECTIONS
            for connection in more:
                connection.sendall(b"POST /api/v1/transcribe/upload HTTP/1.1\r\nHost: localhost\r\n")
            time.sleep(0.5)
            over = httpx.get(lab.url("/health"), headers={"X-API-Key": "bystander"}, timeout=10)
    print(f"[attack]   a bystander's /health took {max(waits) * 1000:.0f} ms at most; past MAX_CONNECTIONS: {over}")
    assert growth[0] < MEMORY_BOUND_MB
    assert over.status_code == 503, "past MAX_CONNECTIONS, a request is answered 503 at once"
    lab.bystander_served()


def test_idle_connections_are_closed_after_keep_alive_seconds(lab: Service) -> None:
    with socket.create_connection(("127.0.0.1", lab.port), timeout=10) as connection:
        connection.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-API-Key: bystander\r\n\r\n")
        answer = connection.recv(65536)
        head, _, body = answer.partition(b"\r\n\r\n")
        length = int(re.search(rb"content-length: *(\d+)", head, re.IGNORECASE).group(1))  # type: ignore[union-attr]
        while len(body) < length:  # the whole answer first: what follows must be the close alone
            body += connection.recv(65536)
        assert head.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        remaining = read_reply(connection, timeout=10)
        idle = time.monotonic() - started
    print(f"\n[attack] an idle keep-alive connection: closed by the server after {idle:.1f} s (KEEP_ALIVE_SECONDS=2)")
    assert remaining == ""
    assert 1 <= idle < 6


def test_trickling_uploads_are_refused_or_cut_off(lab: Service) -> None:
    """20 uploads by one key at a byte a second: MAX_UPLOADS_PER_KEY (2 here) refuses 18 from the
    head; the other two fall behind BODY_MIN_RATE_KB (1 KB/s) after BODY_GRACE_SECONDS (2 s): 408."""
    with lab.peak_growth("20 uploads by one key at a byte a second") as growth, connections(lab, 20) as uploads:
        started = time.monotonic()
        for connection in uploads:
            connection.sendall(upload_head(UPLOAD, "trickler", 28 * MB) + FILE_PART)
            connection.settimeout(0.05)
        replies: dict[int, tuple[str, float]] = {}
        while len(replies) < len(uploads) and time.monotonic() - started < 30:
            for index, connection in enumerate(uploads):
                if index in replies:
                    continue
                with contextlib.suppress(OSError):
                    connection.sendall(b"\0")
                with contextlib.suppress(TimeoutError):
                    if reply := connection.recv(65536).decode(errors="replace"):
                        replies[index] = (reply, time.monotonic() - started)
            time.sleep(1)
        bystander = lab.bystander_served()
    codes = sorted(reply[:12] for reply, _ in replies.values())
    cut = [seconds for reply, seconds in replies.values() if reply.startswith("HTTP/1.1 408")]
    print(f"[attack]   {codes.count('HTTP/1.1 429')} × 429 at once; 408 after {', '.join(f'{s:.1f}' for s in cut)} s")
    print(f"[attack]   a bystander's /health took {bystander * 1000:.0f} ms")
    assert codes == ["HTTP/1.1 408"] * 2 + ["HTTP/1.1 429"] * 18
    assert all(seconds < 10 for seconds in cut)
    assert growth[0] < MEMORY_BOUND_MB


def test_a_declared_body_that_never_comes_is_cut_off(lab: Service) -> None:
    with socket.create_connection(("127.0.0.1", lab.port), timeout=10) as connection:
        started = time.monotonic()
        connection.sendall(upload_head(UPLOAD, "former", 400 * MB))
        reply = read_reply(connection)
        took = time.monotonic() - started
    print(f"\n[attack] a declared 400 MB body that never comes: {reply[:12]} after {took:.1f} s")
    assert reply.startswith("HTTP/1.1 408"), reply
    assert "BODY_MIN_RATE_KB" in reply
    assert took < 10


def _send_form(service: Service, fields: int, field_bytes: int) -> tuple[str, float, int]:
    """Stream a form of `fields` junk fields until the server answers; its reply, the time, the bytes sent."""
    part = b'--xyz\r\nContent-Disposition: form-data; name="junk"\r\n\r\n' + b"x" * field_bytes + b"\r\n"
    length = fields * len(part) + len(b"--xyz--\r\n")
    sent = 0
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", service.port), timeout=30) as connection:
        connection.sendall(upload_head(UPLOAD, "former", length))
        with contextlib.suppress(OSError):  # the server answers and hangs up part-way: as it should
            for _ in range(fields):
                if select.select([connection], [], [], 0)[0]:
                    break  # the answer is in
                connection.sendall(part)
                sent += len(part)
            else:
                connection.sendall(b"--xyz--\r\n")
        reply = read_reply(connection)
    return reply, time.monotonic() - started, sent


def test_forms_of_junk_fields_are_refused_as_they_arrive(lab: Service) -> None:
    for fields, size, answer, says in [
        (450, 1_000_000, "413", "junk: this field is longer than the 64 KB a form field may have"),
        (450, 60_000, "400", "Too many fields. Maximum number of fields is 64"),
    ]:
        with lab.peak_growth(f"a form of {fields} junk fields of {size / 1e3:.0f} kB") as growth:
            reply, took, sent = _send_form(lab, fields, size)
        print(f"[attack]   {reply[:12]} after {took:.2f} s and {sent / MB:.1f} MB sent of {fields * size / MB:.0f} MB")
        assert reply.startswith(f"HTTP/1.1 {answer}"), reply
        assert says in reply
        assert took < 10, "answered, and the connection closed, long before the whole form was sent"
        assert growth[0] < MEMORY_BOUND_MB
    lab.bystander_served()
