"""The shipped reverse proxy (deploy/nginx.conf.template) run by Debian's nginx in front of the
real server: TLS, slow request heads cut off, the body limit, live sessions' WebSocket upgrades."""

from __future__ import annotations

import contextlib
import getpass
import json
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from tests.api.conftest import wait_until
from tests.attacks.conftest import Service
from tests.conftest import ROOT, free_port

TEMPLATE = ROOT / "deploy" / "nginx.conf.template"
MAX_UPLOAD_MB = 2
HEADER_TIMEOUT_SECONDS = 10  # client_header_timeout in the template
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def render(template: str, values: dict[str, str]) -> str:
    """What the nginx image does to a template: ${NAME} becomes the environment's value."""
    names = set(re.findall(r"\$\{(\w+)\}", template))
    assert names == set(values), f"the template uses {sorted(names)}"
    return re.sub(r"\$\{(\w+)\}", lambda match: values[match.group(1)], template)


@dataclass
class Proxy:
    port: int
    ca: trustme.CA

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=f"https://localhost:{self.port}", verify=self.ssl_context(), timeout=10)

    @contextlib.contextmanager
    def connection(self) -> Iterator[ssl.SSLSocket]:
        """A raw TLS connection, for clients that write their requests byte by byte."""
        with socket.create_connection(("127.0.0.1", self.port)) as raw:
            yield self.ssl_context().wrap_socket(raw, server_hostname="localhost")


@pytest.fixture(scope="module")
def proxy(service: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if nginx is None:
        pytest.fail("nginx is not installed; run scripts/setup --dev")
    work = tmp_path_factory.mktemp("nginx")
    ca = trustme.CA()
    ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(str(work / "server.pem"))
    port = free_port()
    server = render(
        TEMPLATE.read_text(),
        {
            "PROXY_PORT": str(port),
            "API_UPSTREAM": f"127.0.0.1:{service.port}",
            "MAX_UPLOAD_MB": str(MAX_UPLOAD_MB),
            "TLS_CERTIFICATE": str(work / "server.pem"),
            "TLS_CERTIFICATE_KEY": str(work / "server.pem"),
        },
    )
    (work / "server.conf").write_text(server)
    # The frame the nginx image puts around conf.d, with paths a test may write to.
    (work / "nginx.conf").write_text(
        f"user {getpass.getuser()};\n"
        f"daemon off;\npid {work}/nginx.pid;\nerror_log {work}/error.log warn;\n"
        "events { worker_connections 256; }\n"
        "http {\n  access_log off;\n"
        + "".join(f"  {kind}_temp_path {work}/{kind};\n" for kind in TEMP_PATHS)
        + f"  include {work}/server.conf;\n}}\n"
    )
    process = subprocess.Popen([nginx, "-p", str(work), "-c", str(work / "nginx.conf")], stderr=subprocess.PIPE)
    try:
        wait_until(lambda: _listening(port, process), timeout=10)
        yield Proxy(port, ca)
    finally:
        process.terminate()
        process.wait(10)


def _listening(port: int, process: subprocess.Popen[bytes]) -> bool:
    assert process.poll() is None, process.stderr.read().decode() if process.stderr else "nginx exited"
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_https_reaches_the_api_through_the_proxy(proxy: Proxy, short_speech: Path) -> None:
    with proxy.client() as client:
        health = client.get("/health", headers={"X-API-Key": "bystander"})
        assert health.status_code == 200, health.text
        assert health.json()["model_loaded"]
        with short_speech.open("rb") as audio:
            upload = client.post("/api/v1/transcribe/upload", headers={"X-API-Key": "former"}, files={"file": audio})
        assert upload.status_code == 202, upload.text
        refused = client.get("/health", headers={"X-API-Key": "wrong"})
        assert refused.status_code == 401


def test_a_slow_request_head_is_cut_off_by_the_proxy(proxy: Proxy, service: Service) -> None:
    started = time.monotonic()
    with proxy.connection() as connection:
        connection.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
        connection.settimeout(1)
        closed = False
        for _ in range(3 * HEADER_TIMEOUT_SECONDS):  # a header line a second, never the blank line
            try:
                if connection.recv(4096) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
            except OSError:  # ssl.SSLError among them
                closed = True
                break
            try:
                connection.sendall(b"X-Slow: 1\r\n")
            except OSError:
                closed = True
                break
    took = time.monotonic() - started
    print(f"\n[attack] a request head sent a line a second: cut off by nginx after {took:.1f} s")
    assert closed
    assert HEADER_TIMEOUT_SECONDS - 1 <= took < 2 * HEADER_TIMEOUT_SECONDS
    service.bystander_served()


def test_the_proxy_answers_413_past_max_upload_mb(proxy: Proxy) -> None:
    with proxy.client() as client:
        response = client.post(
            "/api/v1/transcribe/upload",
            headers={"X-API-Key": "former"},
            files={"file": ("big.wav", b"\0" * (MAX_UPLOAD_MB * 1024 * 1024 + 1))},
        )
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert f"{MAX_UPLOAD_MB} MB (MAX_UPLOAD_MB)" in response.json()["detail"]


def test_bodies_are_streamed_so_the_api_refuses_from_the_head(proxy: Proxy) -> None:
    """A wrong key with a 1.9 MB body declared: 401 comes back through the proxy before the body is sent."""
    head = (
        "POST /api/v1/transcribe/upload HTTP/1.1\r\nHost: localhost\r\nX-API-Key: wrong\r\n"
        f"Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: {19 * 100 * 1024}\r\n\r\n"
    )
    with proxy.connection() as connection:
        connection.sendall(head.encode())
        connection.settimeout(10)
        reply = connection.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 401"), reply


def test_a_live_session_passes_through_the_proxy(proxy: Proxy) -> None:
    """The web page's microphone over HTTPS: a WebSocket upgrade with the key as a subprotocol."""
    url = f"wss://localhost:{proxy.port}/v1/realtime?intent=transcription"

    def offered(key: str) -> list[Subprotocol]:
        return [Subprotocol("realtime"), Subprotocol(f"openai-insecure-api-key.{key}")]

    with connect(url, ssl=proxy.ssl_context(), subprotocols=offered("talker"), proxy=None) as session:
        assert session.subprotocol == "realtime"
        assert json.loads(session.recv(timeout=20))["type"] == "session.created"
        # Events go both ways: a commit of nothing is answered with its error, and the session goes on.
        session.send(json.dumps({"type": "input_audio_buffer.commit"}))
        assert json.loads(session.recv(timeout=20))["error"]["code"] == "input_audio_buffer_commit_empty"
    with pytest.raises(InvalidStatus) as refused:
        connect(url, ssl=proxy.ssl_context(), subprotocols=offered("wrong"), proxy=None)
    assert refused.value.response.status_code == 401
