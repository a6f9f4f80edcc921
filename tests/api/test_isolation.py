"""A task belongs to the key that created it: every other key gets 404, and lists only its own."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from app.keys import hashed_key_id
from tests.api.conftest import API_KEY, AUTH, upload, wait_for_status

OTHER = {"X-API-Key": "second-key"}


def test_another_key_gets_404_on_every_endpoint(client: TestClient, short_speech: Path) -> None:
    task_id = upload(client, short_speech)["task_id"]
    wait_for_status(client, task_id, {"completed"})
    for method, path in [
        ("GET", f"/api/v1/transcribe/status/{task_id}"),
        ("GET", f"/api/v1/transcribe/result/{task_id}"),
        ("DELETE", f"/api/v1/transcribe/task/{task_id}"),
    ]:
        stranger = client.request(method, path, headers=OTHER)
        assert stranger.status_code == 404, (method, path)
        assert stranger.headers["content-type"] == "application/problem+json"
        # Indistinguishable from an id that never existed.
        unknown = client.request(method, path.replace(task_id, "no-such-task"), headers=OTHER)
        assert stranger.json()["detail"].replace(task_id, "no-such-task") == unknown.json()["detail"]
    # The stranger's DELETE removed nothing.
    assert client.get(f"/api/v1/transcribe/result/{task_id}", headers=AUTH).status_code == 200
    assert client.get("/api/v1/transcribe/tasks", headers=OTHER).json()["total"] == 0


def test_store_keeps_a_hash_of_the_key_never_the_key(client: TestClient, short_speech: Path) -> None:
    task_id = upload(client, short_speech)["task_id"]
    task = client.app.state.store.engine.get(task_id)  # type: ignore[attr-defined]
    assert task.owner == hashed_key_id(API_KEY)
    assert API_KEY not in task.owner


def test_task_list_is_paged_filtered_and_own_only(make_client: Callable[..., TestClient], short_speech: Path) -> None:
    client = make_client({"FAKE_MODE": "fail"})
    mine = [upload(client, short_speech)["task_id"] for _ in range(3)]
    with short_speech.open("rb") as audio:
        theirs = client.post("/api/v1/transcribe/upload", headers=OTHER, files={"file": audio}).json()["task_id"]
    for task_id in mine:
        wait_for_status(client, task_id, {"failed"})

    page = client.get("/api/v1/transcribe/tasks", headers=AUTH, params={"limit": 2}).json()
    assert page["total"] == 3
    assert [task["task_id"] for task in page["tasks"]] == mine[::-1][:2], "newest first"
    assert "result" not in page["tasks"][0]
    rest = client.get("/api/v1/transcribe/tasks", headers=AUTH, params={"limit": 2, "offset": 2}).json()
    assert [task["task_id"] for task in rest["tasks"]] == [mine[0]]

    failed = client.get("/api/v1/transcribe/tasks", headers=AUTH, params={"status": "failed"}).json()
    assert failed["total"] == 3
    assert all(task["error"] == "The fake pipeline was told to fail." for task in failed["tasks"])
    none = client.get("/api/v1/transcribe/tasks", headers=AUTH, params={"status": "completed"}).json()
    assert none == {"tasks": [], "total": 0, "limit": 20, "offset": 0}

    theirs_only = client.get("/api/v1/transcribe/tasks", headers=OTHER).json()
    assert [task["task_id"] for task in theirs_only["tasks"]] == [theirs]


def test_task_list_rejects_bad_parameters_with_422(client: TestClient) -> None:
    for params in [{"status": "sleeping"}, {"limit": "0"}, {"limit": "101"}, {"offset": "-1"}]:
        response = client.get("/api/v1/transcribe/tasks", headers=AUTH, params=params)
        assert response.status_code == 422, params
        assert response.headers["content-type"] == "application/problem+json"
