"""audio_url: downloads from a loopback HTTP server, refused targets (SSRF), limits and cancel."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from fastapi.testclient import TestClient

import app.outbound.guard
from app.outbound.guard import GuardedTransport, Target, TargetRefused
from tests.api.conftest import AUTH, AudioServer, status, wait_for_status, wait_until
from tests.conftest import Deadline, free_port


@pytest.fixture
def url_client(make_client: Callable[..., TestClient]) -> TestClient:
    """Downloads from loopback allowed (the test server is on 127.0.0.1), uploads up to 1 MB."""
    return make_client(audio_url_allow_private=True, max_upload_mb=1.0)


def _submit(client: TestClient, url: str, **form: str) -> httpx.Response:
    return client.post("/api/v1/transcribe/upload", headers=AUTH, data={"audio_url": url, **form})


def _failed_with(client: TestClient, url: str) -> str:
    response = _submit(client, url)
    assert response.status_code == 202, response.text
    done = wait_for_status(client, response.json()["task_id"], {"completed", "failed"})
    assert done["status"] == "failed", done
    error: str = done["error"]
    return error


def test_audio_url_is_downloaded_and_transcribed(url_client: TestClient, audio_server: AudioServer) -> None:
    response = _submit(url_client, audio_server.url("/speech.wav"), language="en")
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "pending"
    done = wait_for_status(url_client, response.json()["task_id"], {"completed", "failed"})
    assert done["status"] == "completed", done["error"]
    assert done["result"]["segments"], "the fake pipeline decoded the downloaded audio"
    assert list(url_client.app.state.settings.upload_dir.iterdir()) == []  # type: ignore[attr-defined]


def _started(client: TestClient, task_id: str) -> dict[str, Any] | None:
    doc = status(client, task_id)
    return doc if doc["progress"] > 0 else None


def test_the_download_is_a_stage_with_progress_and_deleting_stops_it(
    url_client: TestClient, audio_server: AudioServer
) -> None:
    task_id = _submit(url_client, audio_server.url("/stall")).json()["task_id"]
    doc = wait_until(lambda: _started(url_client, task_id))
    assert doc["status"] == "pending"
    assert doc["message"] == "Downloading audio"
    task = url_client.app.state.store.engine.get(task_id)  # type: ignore[attr-defined]
    assert task.stage.value == "downloading"
    # Half the bytes are in: half of the download's 5 % share of the whole task.
    assert 1.0 <= doc["progress"] <= 3.0, doc["progress"]
    partial = task.job.audio_path
    assert partial.exists()

    assert url_client.delete(f"/api/v1/transcribe/task/{task_id}", headers=AUTH).status_code == 200
    wait_until(lambda: not partial.exists())
    audio_server.release.set()
    assert url_client.get(f"/api/v1/transcribe/status/{task_id}", headers=AUTH).status_code == 404
    assert list(partial.parent.iterdir()) == []


def test_progress_carries_on_from_the_download(url_client: TestClient, audio_server: AudioServer) -> None:
    task_id = _submit(url_client, audio_server.url("/stall")).json()["task_id"]
    seen = [wait_until(lambda: _started(url_client, task_id))["progress"]]
    audio_server.release.set()
    deadline = Deadline(60, f"task {task_id} to finish")
    while (doc := status(url_client, task_id))["status"] not in ("completed", "failed"):
        seen.append(doc["progress"])
        deadline.check(doc)
    assert doc["status"] == "completed", doc["error"]
    assert seen == sorted(seen), "progress never goes backwards"


def test_a_web_page_fails_clearly(url_client: TestClient, audio_server: AudioServer) -> None:
    assert "returned a web page (text/html), not audio" in _failed_with(url_client, audio_server.url("/page"))


def test_content_is_checked_whatever_its_declared_type(url_client: TestClient, audio_server: AudioServer) -> None:
    error = _failed_with(url_client, audio_server.url("/page-as-audio"))
    assert error.startswith("audio_url: the downloaded content is not usable: Unsupported file type"), error


@pytest.mark.parametrize("path", ["/huge", "/huge-chunked"])
def test_too_many_bytes_fail_clearly(url_client: TestClient, audio_server: AudioServer, path: str) -> None:
    error = _failed_with(url_client, audio_server.url(path))
    assert "larger than this server's limit of 1 MB (MAX_UPLOAD_MB)" in error, error
    assert list(url_client.app.state.settings.upload_dir.iterdir()) == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", ["/bomb", "/gzipped"])
def test_a_compressed_answer_is_refused_undecoded(url_client: TestClient, audio_server: AudioServer, path: str) -> None:
    error = _failed_with(url_client, audio_server.url(path))
    assert error.startswith("audio_url: the server sent the file compressed (Content-Encoding: gzip"), error
    assert "Serve the file as it is, or upload it" in error
    assert audio_server.accepted_encodings == ["identity"]
    assert list(url_client.app.state.settings.upload_dir.iterdir()) == []  # type: ignore[attr-defined]


def test_an_http_error_fails_clearly(url_client: TestClient, audio_server: AudioServer) -> None:
    assert "the server answered HTTP 404" in _failed_with(url_client, audio_server.url("/missing"))


def test_redirects_are_followed_up_to_a_limit(url_client: TestClient, audio_server: AudioServer) -> None:
    response = _submit(url_client, audio_server.url("/redirect?to=/speech.wav"))
    assert wait_for_status(url_client, response.json()["task_id"], {"completed", "failed"})["status"] == "completed"
    assert "more than 5 redirects" in _failed_with(url_client, audio_server.url("/loop"))


def test_a_download_past_its_time_limit_fails(
    make_client: Callable[..., TestClient], audio_server: AudioServer
) -> None:
    client = make_client(audio_url_allow_private=True, audio_url_timeout_seconds=0.5)
    error = _failed_with(client, audio_server.url("/stall"))
    assert "took longer than 0.5 s (AUDIO_URL_TIMEOUT_SECONDS)" in error


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/a.wav",
        "http://localhost:8080/a.wav",
        "http://10.1.2.3/a.wav",
        "http://192.168.0.10/a.wav",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/a.wav",
        "http://[::ffff:127.0.0.1]/a.wav",
        "http://[::ffff:a9fe:a9fe]/a.wav",  # 169.254.169.254, IPv4-mapped
        "http://0.0.0.0/a.wav",
        "http://2130706433/a.wav",  # 127.0.0.1 as one number
    ],
)
def test_non_public_targets_are_refused_by_default(client: TestClient, url: str) -> None:
    response = _submit(client, url)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail.startswith("audio_url: "), detail
    assert "AUDIO_URL_ALLOW_PRIVATE" in detail
    assert "non-public address" in detail


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.wav", "gopher://example.com/", "/a.wav"])
def test_only_http_and_https_are_accepted(url_client: TestClient, url: str) -> None:
    response = _submit(url_client, url)
    assert response.status_code == 422
    assert response.json()["detail"] == "audio_url: give an absolute http:// or https:// URL"


@pytest.fixture
def loopback_is_public(monkeypatch: pytest.MonkeyPatch) -> None:
    """127.0.0.1 counts as public, every other address as it really is: stands in for a public
    server that redirects, which a test without network cannot reach."""
    real = app.outbound.guard.is_public
    monkeypatch.setattr(app.outbound.guard, "is_public", lambda address: address == "127.0.0.1" or real(address))


@pytest.mark.parametrize(
    "target", ["http://10.0.0.1/a.wav", "http://169.254.169.254/latest/meta-data/", "http://[::1]/a.wav"]
)
@pytest.mark.usefixtures("loopback_is_public")
def test_a_redirect_into_a_private_range_is_refused(client: TestClient, audio_server: AudioServer, target: str) -> None:
    error = _failed_with(client, audio_server.url(f"/redirect?to={target}"))
    assert error.startswith("audio_url: "), error
    assert "AUDIO_URL_ALLOW_PRIVATE" in error
    assert len(audio_server.hosts) == 1, "only the first hop was requested"


@pytest.mark.usefixtures("loopback_is_public")
def test_the_transport_connects_to_the_address_it_checked(
    audio_server: AudioServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name is resolved once per request and the connection goes to that address, with the
    name in the Host header: a second, different answer (DNS rebinding) is never used."""
    answers = iter(["127.0.0.1", "10.0.0.1"])
    lookups: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def rebinding_dns(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "audio.example":
            return real_getaddrinfo(host, port, *args, **kwargs)
        lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_dns)

    async def fetch() -> httpx.Response:
        transport = GuardedTransport(False, Target("audio_url", "AUDIO_URL_ALLOW_PRIVATE"))
        async with httpx.AsyncClient(transport=transport) as http:
            return await http.get(f"http://audio.example:{audio_server.port}/speech.wav")

    response = asyncio.run(fetch())
    assert response.status_code == 200
    assert response.content == audio_server.audio
    assert lookups == ["audio.example"]
    assert audio_server.hosts == [f"audio.example:{audio_server.port}"]

    async def fetch_again() -> None:
        transport = GuardedTransport(False, Target("audio_url", "AUDIO_URL_ALLOW_PRIVATE"))
        async with httpx.AsyncClient(transport=transport) as http:
            await http.get(f"http://audio.example:{audio_server.port}/speech.wav")

    with pytest.raises(TargetRefused, match=r"'audio\.example' is a loopback, private"):
        asyncio.run(fetch_again())  # the name now points into the private network


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, ssl.SSLContext, list[str | None]]]:
    """An https server on 127.0.0.1 whose certificate names only `audio.example`, a client
    context trusting its CA, and the server names (SNI) clients sent."""
    authority = trustme.CA()
    certificate = authority.issue_cert("audio.example")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    names: list[str | None] = []
    server_context.sni_callback = lambda sock, name, context: names.append(name)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.socket = server_context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield port, client_context, names
    server.shutdown()
    thread.join(5)


@pytest.mark.usefixtures("loopback_is_public")
def test_https_keeps_the_name_for_sni_and_the_certificate(
    tls_server: tuple[int, ssl.SSLContext, list[str | None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connecting to the checked address, TLS still names the host: the certificate for
    `audio.example` verifies, one for any other name would not."""
    port, trusting, server_names = tls_server
    real_getaddrinfo = socket.getaddrinfo

    def dns(host: Any, service: Any, *args: Any, **kwargs: Any) -> Any:
        if host in ("audio.example", "other.example"):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", service))]
        return real_getaddrinfo(host, service, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", dns)

    async def fetch(host: str) -> httpx.Response:
        transport = GuardedTransport(False, Target("audio_url", "AUDIO_URL_ALLOW_PRIVATE"), verify=trusting)
        async with httpx.AsyncClient(transport=transport) as http:
            return await http.get(f"https://{host}:{port}/speech.wav")

    assert asyncio.run(fetch("audio.example")).content == b"ok"
    with pytest.raises(httpx.ConnectError, match="certificate verify failed"):
        asyncio.run(fetch("other.example"))
    assert server_names == ["audio.example", "other.example"], "SNI carries the name, not the address"
