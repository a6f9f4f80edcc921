"""One behaviour suite for every VoiceStore: memory, SQLite and Redis (on a real redis-server)."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from app.voices.store import (
    MemoryVoiceStore,
    NameTaken,
    RedisVoiceStore,
    SqliteVoiceStore,
    TooManyVoices,
    Voice,
    VoiceStore,
)


@pytest.fixture(params=["memory", "sqlite", "redis"])
def voices(request: pytest.FixtureRequest, tmp_path: Path) -> VoiceStore:
    if request.param == "sqlite":
        return SqliteVoiceStore(tmp_path / "tasks.db")
    if request.param == "redis":
        client = redis.Redis.from_url(request.getfixturevalue("redis_url"), decode_responses=True)
        return RedisVoiceStore(client, prefix=f"test-{uuid.uuid4().hex}:")
    return MemoryVoiceStore()


def test_voices_are_kept_per_owner(voices: VoiceStore) -> None:
    alice = Voice(owner="key-a", name="Alice", encoder="enc", embedding=[0.6, 0.8])
    bob = Voice(owner="key-a", name="Bob", encoder="enc", embedding=[1.0, 0.0])
    other = Voice(owner="key-b", name="Alice", encoder="enc", embedding=[0.0, 1.0])
    for voice in (alice, bob, other):
        voices.save(voice)

    assert [voice.name for voice in voices.list("key-a")] == ["Alice", "Bob"]
    assert voices.get("key-a", alice.id) == alice
    assert voices.get("key-b", alice.id) is None  # another owner's id is unknown
    assert not voices.delete("key-b", alice.id)

    voices.save(alice.with_sample([0.7, 0.7]))
    updated = voices.get("key-a", alice.id)
    assert updated is not None
    assert updated.samples == 2
    assert updated.embedding == [0.7, 0.7]

    assert voices.delete("key-a", bob.id)
    assert voices.get("key-a", bob.id) is None
    assert voices.delete_all("key-a") == 1
    assert voices.list("key-a") == []
    assert [voice.name for voice in voices.list("key-b")] == ["Alice"]


def test_sqlite_voices_survive_reopening(tmp_path: Path) -> None:
    voice = Voice(owner="key-a", name="Alice", encoder="enc", embedding=[0.6, 0.8])
    SqliteVoiceStore(tmp_path / "tasks.db").save(voice)
    assert SqliteVoiceStore(tmp_path / "tasks.db").list("key-a") == [voice]


def _add_at_once(voices: VoiceStore, new: list[Voice], max_voices: int) -> list[str]:
    """Add the voices from as many threads at once; what became of each: added, taken or full."""
    start = threading.Barrier(len(new))

    def add(voice: Voice) -> str:
        start.wait()
        try:
            voices.add(voice, max_voices)
        except NameTaken:
            return "taken"
        except TooManyVoices:
            return "full"
        return "added"

    with ThreadPoolExecutor(len(new)) as pool:
        return list(pool.map(add, new))


def test_concurrent_adds_make_one_voice_of_a_name(voices: VoiceStore) -> None:
    outcomes = _add_at_once(voices, [Voice(owner="key-a", name="Dup", encoder="e", embedding=[1.0])] * 10, 200)
    assert sorted(outcomes) == ["added"] + ["taken"] * 9
    assert [voice.name for voice in voices.list("key-a")] == ["Dup"]
    voices.add(Voice(owner="key-b", name="Dup", encoder="e", embedding=[1.0]), 200)  # another key's names are apart


def test_concurrent_adds_stay_within_the_voice_limit(voices: VoiceStore) -> None:
    new = [Voice(owner="key-a", name=f"Voice {n}", encoder="e", embedding=[1.0]) for n in range(12)]
    outcomes = _add_at_once(voices, new, 5)
    assert sorted(outcomes) == ["added"] * 5 + ["full"] * 7
    assert len(voices.list("key-a")) == 5
