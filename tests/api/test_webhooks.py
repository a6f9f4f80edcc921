"""callback_url: signed status documents POSTed to a loopback receiver, retries, refused targets."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from standardwebhooks import Webhook

from app.keys import hashed_key_id
from app.outbound.webhooks import key_secret
from app.tasks.async_store import AsyncTaskStore
from tests.api.conftest import API_KEY, AUTH, make_settings, upload, wait_until
from tests.bombs import gzip_bomb
from tests.conftest import free_port

SECRET = "whsec_" + base64.b64encode(b"a test secret of thirty-two bytes").decode()
# What signs the callbacks of API_KEY's tasks (the tests of GET /api/v1/webhook-secret check it is served).
KEY_SECRET = key_secret(SecretStr(SECRET), hashed_key_id(API_KEY))


@dataclass
class Receiver:
    url: str
    failures_left: int = 0
    answer: bytes = b""
    """Sent gzip-encoded with every 2xx answer."""
    calls: list[tuple[float, dict[str, str], bytes]] = field(default_factory=list)


@contextlib.contextmanager
def listening(state: Receiver, port: int) -> Iterator[Receiver]:
    """A loopback HTTP server on `port` that records callbacks, answering 503 to the first `failures_left`."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            state.calls.append((time.monotonic(), {k.lower(): v for k, v in self.headers.items()}, body))
            failing = state.failures_left > 0
            state.failures_left -= 1
            if failing or not state.answer:
                self.send_response(503 if failing else 204)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("content-encoding", "gzip")
            self.send_header("content-length", str(len(state.answer)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the sender may hang up without reading
                self.wfile.write(state.answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    port = free_port()
    with listening(Receiver(url=f"http://127.0.0.1:{port}/hook?token=abc"), port) as state:
        yield state


@pytest.fixture
def hook_client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(
        webhook_secret=SECRET, webhook_allow_private=True, webhook_retry_base_seconds=0.2, webhook_max_attempts=4
    )


def _wait_until_settled(client: TestClient) -> None:
    """Until no delivery is pending: each has succeeded or given up, so no further try will come."""
    wait_until(lambda: client.app.state.store.engine.pending_deliveries() == {})  # type: ignore[attr-defined]


def _verified(call: tuple[float, dict[str, str], bytes]) -> dict[str, Any]:
    """The payload, once its signature checks out with the standardwebhooks library."""
    _, headers, body = call
    payload: dict[str, Any] = Webhook(KEY_SECRET).verify(body, headers)
    return payload


def test_completed_task_is_posted_signed(hook_client: TestClient, receiver: Receiver, short_speech: Path) -> None:
    task_id = upload(hook_client, short_speech, callback_url=receiver.url)["task_id"]
    wait_until(lambda: receiver.calls)
    payload = _verified(receiver.calls[0])
    status = hook_client.get(f"/api/v1/transcribe/status/{task_id}", headers=AUTH).json()
    assert payload == status
    assert payload["status"] == "completed"
    assert payload["result"]["segments"]
    headers = receiver.calls[0][1]
    assert headers["webhook-id"] == f"{task_id}.completed"
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    assert headers["webhook-signature"].startswith("v1,")
    assert headers["content-type"] == "application/json"


def test_a_tampered_callback_fails_verification(
    hook_client: TestClient, receiver: Receiver, short_speech: Path
) -> None:
    upload(hook_client, short_speech, callback_url=receiver.url)
    wait_until(lambda: receiver.calls)
    _, headers, body = receiver.calls[0]
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(KEY_SECRET).verify(body.replace(b"completed", b"failed"), headers)
    other = base64.b64encode(b"somebody else's secret").decode()
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(other).verify(body, headers)


def test_failures_are_retried_with_growing_pauses(
    hook_client: TestClient, receiver: Receiver, short_speech: Path
) -> None:
    receiver.failures_left = 2
    upload(hook_client, short_speech, callback_url=receiver.url)
    wait_until(lambda: len(receiver.calls) == 3)
    times = [call[0] for call in receiver.calls]
    assert times[1] - times[0] >= 0.2
    assert times[2] - times[1] >= 0.4  # doubled
    assert {call[1]["webhook-id"] for call in receiver.calls} == {receiver.calls[0][1]["webhook-id"]}
    assert _verified(receiver.calls[2])["status"] == "completed"
    _wait_until_settled(hook_client)
    assert len(receiver.calls) == 3, "no more tries after a success"


def test_the_receivers_answer_is_not_read(hook_client: TestClient, receiver: Receiver, short_speech: Path) -> None:
    receiver.answer = gzip_bomb()  # 1 GiB once decoded
    upload(hook_client, short_speech, callback_url=receiver.url)
    wait_until(lambda: receiver.calls)
    _wait_until_settled(hook_client)
    assert len(receiver.calls) == 1, "delivered at the first attempt: a 2xx is all that counts"
    assert receiver.calls[0][1]["accept-encoding"] == "identity"


def test_the_callback_carries_the_results_warnings_and_notes(
    make_client: Callable[..., TestClient], receiver: Receiver, short_speech: Path
) -> None:
    client = make_client(
        {"FAKE_WARNING": "two languages", "FAKE_NOTE": "words timed by Whisper"},
        webhook_secret=SECRET, webhook_allow_private=True,
    )  # fmt: skip
    upload(client, short_speech, callback_url=receiver.url)
    wait_until(lambda: receiver.calls)
    payload = _verified(receiver.calls[0])
    assert (payload["warnings"], payload["notes"]) == (["two languages"], ["words timed by Whisper"])
    assert payload["result"]["warnings"] == ["two languages"]


def test_failed_task_is_posted_too(
    make_client: Callable[..., TestClient], receiver: Receiver, short_speech: Path
) -> None:
    client = make_client({"FAKE_MODE": "fail"}, webhook_secret=SECRET, webhook_allow_private=True)
    task_id = upload(client, short_speech, callback_url=receiver.url)["task_id"]
    wait_until(lambda: receiver.calls)
    payload = _verified(receiver.calls[0])
    assert (payload["task_id"], payload["status"]) == (task_id, "failed")
    assert payload["error"] == "The fake pipeline was told to fail."


def test_shutdown_does_not_wait_for_a_dead_receiver(tmp_path: Path, short_speech: Path) -> None:
    from app.main import create_app
    from tests.fakes import FakePipeline

    dead = f"http://127.0.0.1:{free_port()}/nobody-listens"
    settings = make_settings(tmp_path, webhook_secret=SECRET, webhook_allow_private=True, webhook_retry_base_seconds=30)
    with TestClient(create_app(settings, FakePipeline)) as client:
        task_id = upload(client, short_speech, callback_url=dead)["task_id"]
        wait_until(lambda: client.get(f"/api/v1/transcribe/status/{task_id}", headers=AUTH).json()["completed_at"])
        # Once the first attempt has failed (its record says so), the next is 30 s away.
        pending = client.app.state.store.engine.pending_deliveries  # type: ignore[attr-defined]
        wait_until(lambda: json.loads(pending().get(f"{task_id}.completed", "{}")).get("attempts_made") == 1)
        started = time.monotonic()
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
    ],
)
def test_private_targets_are_refused_by_default(
    make_client: Callable[..., TestClient], short_speech: Path, url: str
) -> None:
    client = make_client(webhook_secret=SECRET)
    with short_speech.open("rb") as audio:
        response = client.post(
            "/api/v1/transcribe/upload", headers=AUTH, files={"file": audio}, data={"callback_url": url}
        )
    assert response.status_code == 422
    assert "WEBHOOK_ALLOW_PRIVATE" in response.json()["detail"]


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        ("ftp://example.com/hook", "give an absolute http:// or https:// URL"),
        ("/relative", "give an absolute http:// or https:// URL"),
        ("http://[not-an-ip/", "not a valid URL"),
    ],
)
def test_malformed_urls_are_refused(
    make_client: Callable[..., TestClient], short_speech: Path, url: str, detail: str
) -> None:
    client = make_client(webhook_secret=SECRET, webhook_allow_private=True)
    with short_speech.open("rb") as audio:
        response = client.post(
            "/api/v1/transcribe/upload", headers=AUTH, files={"file": audio}, data={"callback_url": url}
        )
    assert response.status_code == 422
    assert detail in response.json()["detail"]


def test_without_a_secret_callbacks_are_refused(client: TestClient, short_speech: Path) -> None:
    with short_speech.open("rb") as audio:
        response = client.post(
            "/api/v1/transcribe/upload",
            headers=AUTH,
            files={"file": audio},
            data={"callback_url": "https://example.com/hook"},
        )
    assert response.status_code == 422
    assert "no WEBHOOK_SECRET" in response.json()["detail"]


def test_bad_secret_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="WEBHOOK_SECRET must be base64"):
        make_settings(tmp_path, webhook_secret="whsec_")


def test_a_short_secret_is_refused_at_start(tmp_path: Path) -> None:
    """Every key's secret derives from it: 15 bytes could be searched offline from one of them."""
    with pytest.raises(ValueError, match="WEBHOOK_SECRET holds 15 bytes; it needs at least 16 random bytes"):
        make_settings(tmp_path, webhook_secret="whsec_" + base64.b64encode(b"s" * 15).decode())
    assert make_settings(tmp_path, webhook_secret=base64.b64encode(b"s" * 16).decode()).webhook_secret is not None


def test_payload_has_the_seed_status_fields(hook_client: TestClient, receiver: Receiver, short_speech: Path) -> None:
    upload(hook_client, short_speech, callback_url=receiver.url)
    wait_until(lambda: receiver.calls)
    assert set(json.loads(receiver.calls[0][2])) == {
        "task_id", "status", "progress", "message", "created_at", "started_at", "completed_at", "error", "result",
        "file_name", "duration", "warnings", "notes",
    }  # fmt: skip


def test_each_key_reads_its_own_secret_and_it_signs_only_its_callbacks(
    make_client: Callable[..., TestClient], receiver: Receiver, short_speech: Path
) -> None:
    client = make_client(api_keys="alpha:alpha-key,beta:beta-key", webhook_secret=SECRET, webhook_allow_private=True)
    secrets = {}
    for name in ("alpha", "beta"):
        answer = client.get("/api/v1/webhook-secret", headers={"X-API-Key": f"{name}-key"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["key_id"] == name
        secrets[name] = answer.json()["secret"]
    assert secrets["alpha"] != secrets["beta"]
    assert SECRET not in secrets.values()
    assert client.get("/api/v1/webhook-secret").status_code == 401

    # One after the other, so the first callback is alpha's and the second beta's.
    for count, name in enumerate(("alpha", "beta"), start=1):
        with short_speech.open("rb") as audio:
            sent = client.post(
                "/api/v1/transcribe/upload",
                headers={"X-API-Key": f"{name}-key"},
                files={"file": ("a.wav", audio)},
                data={"callback_url": receiver.url},
            )
        assert sent.status_code == 202, sent.text
        wait_until(lambda count=count: len(receiver.calls) == count)  # type: ignore[misc]
    alpha_call, beta_call = receiver.calls[0], receiver.calls[1]
    assert Webhook(secrets["alpha"]).verify(alpha_call[2], alpha_call[1])["status"] == "completed"
    assert Webhook(secrets["beta"]).verify(beta_call[2], beta_call[1])["status"] == "completed"
    # Key A's secret does not verify key B's callbacks, nor the server's own secret either.
    for secret in (secrets["alpha"], SECRET):
        with pytest.raises(Exception, match="No matching signature"):
            Webhook(secret).verify(beta_call[2], beta_call[1])
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(secrets["beta"]).verify(alpha_call[2], alpha_call[1])


def test_without_a_server_secret_there_is_no_key_secret(client: TestClient) -> None:
    answer = client.get("/api/v1/webhook-secret", headers=AUTH)
    assert answer.status_code == 404
    assert "WEBHOOK_SECRET" in answer.json()["detail"]


def test_a_pending_delivery_survives_a_restart(
    make_client: Callable[..., TestClient], short_speech: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The receiver is down while the task ends; the server restarts; the callback arrives."""
    caplog.set_level(logging.INFO, logger="app.outbound.webhooks")
    port = free_port()
    state = Receiver(url=f"http://127.0.0.1:{port}/hook")
    durable = {"task_store": "sqlite", "webhook_secret": SECRET, "webhook_allow_private": True}
    before = make_client(webhook_retry_base_seconds=1.0, **durable)
    task_id = upload(before, short_speech, callback_url=state.url)["task_id"]
    store = before.app.state.store.engine  # type: ignore[attr-defined]
    wait_until(lambda: '"attempts_made": 1' in "".join(store.pending_deliveries().values()))
    before.__exit__(None, None, None)
    assert list(store.pending_deliveries()) == [f"{task_id}.completed"], "kept for the next run"

    with listening(state, port):
        after = make_client(**durable)
        wait_until(lambda: state.calls)
        assert _verified(state.calls[0])["task_id"] == task_id
        assert state.calls[0][1]["webhook-id"] == f"{task_id}.completed"
        wait_until(lambda: not after.app.state.store.engine.pending_deliveries())  # type: ignore[attr-defined]
    assert "Resuming webhook" in caplog.text
    assert len(state.calls) == 1


def test_a_callback_owed_is_kept_with_the_ending_when_the_store_fails_next(
    make_client: Callable[..., TestClient], short_speech: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task's ending and its delivery record are one write: a store that fails right after the
    ending (or a process that dies then) cannot lose the callback. Here every delivery write after the
    ending fails while the receiver refuses; after a restart the callback arrives, once, same id."""
    port = free_port()
    state = Receiver(url=f"http://127.0.0.1:{port}/hook", failures_left=1_000_000)
    durable = {"task_store": "sqlite", "webhook_secret": SECRET, "webhook_allow_private": True}

    async def refused(_store: AsyncTaskStore, _message_id: str, _record: str) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    with listening(state, port), monkeypatch.context() as patched:
        patched.setattr(AsyncTaskStore, "put_delivery", refused)
        before = make_client(webhook_retry_base_seconds=0.2, **durable)
        task_id = upload(before, short_speech, callback_url=state.url)["task_id"]
        wait_until(lambda: len(state.calls) >= 2)  # ended, tried, refused, and the store took no retry record
        before.__exit__(None, None, None)

    state.failures_left, state.calls = 0, []
    with listening(state, port):
        after = make_client(**durable)
        wait_until(lambda: state.calls)
        wait_until(lambda: not after.app.state.store.engine.pending_deliveries())  # type: ignore[attr-defined]
    assert [headers["webhook-id"] for _, headers, _ in state.calls] == [f"{task_id}.completed"]
    assert _verified(state.calls[0])["status"] == "completed"


def test_a_server_killed_with_a_callback_pending_sends_it_once_after_restart(
    serve: Callable[..., subprocess.Popen[bytes]], short_speech: Path, tmp_path: Path
) -> None:
    """kill -9 of a real server (and its workers) while the callback of an ended task is being retried:
    the restarted server delivers it, once, under the same webhook-id."""
    port = free_port()
    state = Receiver(url=f"http://127.0.0.1:{port}/hook", failures_left=1_000_000)
    with listening(state, port):
        api = free_port()  # after the receiver has bound its port
        env = {
            "TASK_STORE": "sqlite", "WEBHOOK_SECRET": SECRET, "WEBHOOK_ALLOW_PRIVATE": "true",
            "WEBHOOK_RETRY_BASE_SECONDS": "0.2", "WEBHOOK_MAX_ATTEMPTS": "20",
        }  # fmt: skip
        first = serve(api, **env)
        with short_speech.open("rb") as audio:
            answer = httpx.post(
                f"http://127.0.0.1:{api}/api/v1/transcribe/upload", headers=AUTH, files={"file": audio},
                data={"callback_url": state.url}, timeout=30,
            )  # fmt: skip
        assert answer.status_code == 202, answer.text
        task_id = answer.json()["task_id"]
        wait_until(lambda: state.calls, timeout=30)  # the task ended; its receiver refuses
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
        refused = len(state.calls)
        state.failures_left = 0  # from now on every try is accepted

        serve(api, **env)
        wait_until(lambda: len(state.calls) > refused)
        with contextlib.closing(sqlite3.connect(tmp_path / "data" / "tasks.db")) as db:
            # Its record gone: delivered, and no further try will come.
            wait_until(lambda: db.execute("SELECT COUNT(*) FROM webhook_deliveries").fetchone()[0] == 0)
    assert {headers["webhook-id"] for _, headers, _ in state.calls} == {f"{task_id}.completed"}
    assert len(state.calls) - refused == 1, f"accepted {len(state.calls) - refused} times"
    assert _verified(state.calls[-1])["task_id"] == task_id
