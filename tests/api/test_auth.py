"""Every endpoint needs a key from API_KEYS; the check happens before the body is read."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.api.conftest import API_KEY, AUTH, make_settings
from tests.fakes import FakePipeline

PROTECTED = [
    ("GET", "/ready"),
    ("GET", "/metrics"),
    ("GET", "/api/v1/transcribe/events/some-id"),
    ("POST", "/v1/audio/transcriptions"),
    ("GET", "/health"),
    ("POST", "/api/v1/transcribe/upload"),
    ("GET", "/api/v1/transcribe/status/some-id"),
    ("GET", "/api/v1/transcribe/result/some-id"),
    ("DELETE", "/api/v1/transcribe/task/some-id"),
    ("GET", "/api/v1/transcribe/tasks"),
    ("GET", "/api/v1/webhook-secret"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_missing_key_is_refused(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert "Missing X-API-Key" in response.json()["detail"]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_wrong_key_is_refused(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path, headers={"X-API-Key": "test-key-but-wrong"})
    assert response.status_code == 401
    assert response.json()["detail"].startswith("Invalid API key")


def test_every_configured_key_is_accepted(client: TestClient) -> None:
    assert client.get("/health", headers=AUTH).status_code == 200
    assert client.get("/health", headers={"X-API-Key": "second-key"}).status_code == 200


def test_docs_are_open_and_offer_the_key_scheme(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    assert client.get("/redoc").status_code == 200
    schema = client.get("/openapi.json").json()
    scheme = schema["components"]["securitySchemes"]["APIKeyHeader"]
    assert scheme == {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "A key from API_KEYS"}
    assert {"APIKeyHeader": []} in schema["paths"]["/api/v1/transcribe/upload"]["post"]["security"]


def test_without_api_keys_a_key_is_generated_and_shown_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings(tmp_path, api_keys=None)
    app = create_app(settings, FakePipeline)
    printed = capsys.readouterr().err
    assert printed.count("API_KEYS is not set") == 1
    key = printed.strip().rsplit(" ", 1)[-1]
    with TestClient(app) as client:
        assert client.get("/health").status_code == 401
        assert client.get("/health", headers={"X-API-Key": key}).status_code == 200


def test_blank_api_keys_are_rejected_at_start() -> None:
    with pytest.raises(ValueError, match="API_KEYS holds no key"):
        Settings(_env_file=None, api_keys=" , ")  # type: ignore[call-arg]


def test_bad_key_is_answered_before_the_body_arrives(live_server: Callable[..., int]) -> None:
    """Claim a 200 MB upload, send only the headers: the 401 must come back anyway."""
    request = (
        "POST /api/v1/transcribe/upload HTTP/1.1\r\n"
        "Host: localhost\r\n"
        "X-API-Key: wrong\r\n"
        "Content-Type: multipart/form-data; boundary=xyz\r\n"
        f"Content-Length: {200 * 1024 * 1024}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", live_server()), timeout=5) as connection:
        connection.sendall(request.encode())
        started = time.monotonic()
        reply = connection.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 401"), reply
    assert time.monotonic() - started < 5


def test_bearer_token_is_accepted_like_x_api_key(client: TestClient) -> None:
    assert client.get("/health", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200
    assert client.get("/health", headers={"Authorization": "bearer second-key"}).status_code == 200
    wrong = client.get("/health", headers={"Authorization": "Bearer test-key-but-wrong"})
    assert wrong.status_code == 401
    assert wrong.json()["detail"].startswith("Invalid API key")
    # Another scheme is no key at all.
    assert "Missing" in client.get("/health", headers={"Authorization": f"Basic {API_KEY}"}).json()["detail"]


def test_openapi_offers_bearer_too(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert {"HTTPBearer": []} in schema["paths"]["/v1/audio/transcriptions"]["post"]["security"]
