"""API_KEYS entries may name their owner (`id:key`): data belongs to the id, so a key can be replaced."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.keys import hashed_key_id, parse_api_keys
from tests.api.conftest import API_KEY, AUTH, upload, wait_for_status


def test_entries_with_and_without_ids() -> None:
    keys = parse_api_keys(" team-a:first-secret , bare-secret,ops.1:x:y ")
    assert [(key.id, key.key.get_secret_value()) for key in keys] == [
        ("team-a", "first-secret"),
        (hashed_key_id("bare-secret"), "bare-secret"),
        ("ops.1", "x:y"),  # the key is everything after the first colon
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("bad id:secret-one", "entry 1: write it as id:key"),
        ("ok:secret-one,:secret-two", "entry 2: write it as id:key"),
        ("team:,ops:secret-two", "entry 1: write it as id:key"),
        ("team:secret-one,team:secret-two", "share an id"),
    ],
)
def test_malformed_entries_are_refused_without_showing_the_key(value: str, message: str) -> None:
    assert "secret" in value, "each value holds keys, which the message must not show"
    with pytest.raises(ValueError, match=message) as refused:
        Settings(_env_file=None, api_keys=value)  # type: ignore[call-arg]
    assert "secret" not in str(refused.value)


def test_rotating_a_key_keeps_its_tasks(
    make_client: Callable[..., TestClient], short_speech: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    durable = {"task_store": "sqlite"}
    # The helpers send API_KEY, here the team's old key.
    before = make_client(api_keys=f"team:{API_KEY},other:their-secret", **durable)
    task_id = upload(before, short_speech)["task_id"]
    wait_for_status(before, task_id, {"completed"})
    assert before.app.state.store.engine.get(task_id).owner == "team"  # type: ignore[attr-defined]
    before.__exit__(None, None, None)

    after = make_client(api_keys="team:new-secret,other:their-secret", **durable)
    assert after.get(f"/api/v1/transcribe/result/{task_id}", headers={"X-API-Key": "new-secret"}).status_code == 200
    assert after.get("/health", headers=AUTH).status_code == 401
    stranger = after.get(f"/api/v1/transcribe/result/{task_id}", headers={"X-API-Key": "their-secret"})
    assert stranger.status_code == 404
    assert "new-secret" not in caplog.text
    assert API_KEY not in caplog.text
