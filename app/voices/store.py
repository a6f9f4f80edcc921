"""Where enrolled voices live: beside the tasks, in the same backend (memory, SQLite or Redis).

A voice is a name, the mean of its samples' unit-length speaker embeddings and how many samples
made it; never audio. Every query is scoped to the owner (the caller's key id).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import redis

from app.private_files import private_file


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Voice:
    owner: str
    name: str
    encoder: str
    """The speaker encoder that made the embedding; only embeddings of the same encoder compare."""
    embedding: list[float]
    samples: int = 1
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: datetime = field(default_factory=_now)
    updated_at: datetime = field(default_factory=_now)

    def to_json(self) -> str:
        record = asdict(self)
        record.update(created_at=self.created_at.isoformat(), updated_at=self.updated_at.isoformat())
        return json.dumps(record)

    @classmethod
    def from_json(cls, text: str) -> Voice:
        record = json.loads(text)
        record.update(
            created_at=datetime.fromisoformat(record["created_at"]),
            updated_at=datetime.fromisoformat(record["updated_at"]),
        )
        return cls(**record)

    def with_sample(self, embedding: list[float]) -> Voice:
        return replace(self, embedding=embedding, samples=self.samples + 1, updated_at=_now())


class NameTaken(Exception):
    """The owner already has a voice of this name."""

    def __init__(self, existing: Voice) -> None:
        super().__init__(existing.name)
        self.existing = existing


class TooManyVoices(Exception):
    """The owner already has as many voices as allowed."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


def check_room(mine: list[Voice], voice: Voice, max_voices: int) -> None:
    """Raise NameTaken or TooManyVoices when `voice` may not join the owner's voices `mine`."""
    if existing := next((other for other in mine if other.name == voice.name), None):
        raise NameTaken(existing)
    if len(mine) >= max_voices:
        raise TooManyVoices(max_voices)


class VoiceStore(Protocol):
    def save(self, voice: Voice) -> None:
        """Replace the voice with this id (or add it)."""
        ...

    def add(self, voice: Voice, max_voices: int) -> None:
        """Add a new voice unless its owner has one of that name (NameTaken) or `max_voices` already
        (TooManyVoices): checked and added in one step, so concurrent enrolments cannot pass either."""
        ...

    def get(self, owner: str, voice_id: str) -> Voice | None: ...

    def list(self, owner: str) -> list[Voice]:
        """The owner's voices, oldest first."""
        ...

    def delete(self, owner: str, voice_id: str) -> bool: ...

    def delete_all(self, owner: str) -> int:
        """Delete every voice of the owner; how many there were."""
        ...


class MemoryVoiceStore:
    def __init__(self) -> None:
        self._voices: dict[str, Voice] = {}
        self._lock = threading.Lock()

    def save(self, voice: Voice) -> None:
        self._voices[voice.id] = voice

    def add(self, voice: Voice, max_voices: int) -> None:
        with self._lock:
            check_room(self.list(voice.owner), voice, max_voices)
            self._voices[voice.id] = voice

    def get(self, owner: str, voice_id: str) -> Voice | None:
        voice = self._voices.get(voice_id)
        return voice if voice is not None and voice.owner == owner else None

    def list(self, owner: str) -> list[Voice]:
        return sorted((v for v in self._voices.values() if v.owner == owner), key=lambda v: v.created_at)

    def delete(self, owner: str, voice_id: str) -> bool:
        if self.get(owner, voice_id) is None:
            return False
        del self._voices[voice_id]
        return True

    def delete_all(self, owner: str) -> int:
        mine = [voice.id for voice in self.list(owner)]
        for voice_id in mine:
            del self._voices[voice_id]
        return len(mine)


class SqliteVoiceStore:
    """A `voices` table in the tasks' SQLite file, with the same journal settings."""

    def __init__(self, path: Path) -> None:
        private_file(path, "TASK_DB_PATH")  # voices are private, as the tasks beside them are
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(
            "CREATE TABLE IF NOT EXISTS voices (id TEXT PRIMARY KEY, owner TEXT NOT NULL, record TEXT NOT NULL, "
            "created_at TEXT NOT NULL); CREATE INDEX IF NOT EXISTS voices_owner ON voices (owner, created_at);"
        )

    def _query(self, sql: str, params: Any = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _insert(self, voice: Voice) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO voices (id, owner, record, created_at) VALUES (?, ?, ?, ?)",
            (voice.id, voice.owner, voice.to_json(), voice.created_at.isoformat(timespec="microseconds")),
        )

    def save(self, voice: Voice) -> None:
        with self._lock:
            self._insert(voice)

    def add(self, voice: Voice, max_voices: int) -> None:
        with self._lock:
            # IMMEDIATE: another process writing the same file waits, so the check still holds at the insert.
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute("SELECT record FROM voices WHERE owner = ?", (voice.owner,)).fetchall()
                check_room([Voice.from_json(row[0]) for row in rows], voice, max_voices)
                self._insert(voice)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def get(self, owner: str, voice_id: str) -> Voice | None:
        rows = self._query("SELECT record FROM voices WHERE id = ? AND owner = ?", (voice_id, owner))
        return Voice.from_json(rows[0][0]) if rows else None

    def list(self, owner: str) -> list[Voice]:
        rows = self._query("SELECT record FROM voices WHERE owner = ? ORDER BY created_at", (owner,))
        return [Voice.from_json(row[0]) for row in rows]

    def delete(self, owner: str, voice_id: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM voices WHERE id = ? AND owner = ?", (voice_id, owner)).rowcount > 0

    def delete_all(self, owner: str) -> int:
        with self._lock:
            return int(self._db.execute("DELETE FROM voices WHERE owner = ?", (owner,)).rowcount)


class RedisVoiceStore:
    """One string per voice and a sorted set of each owner's voice ids (by creation time)."""

    def __init__(self, client: redis.Redis, prefix: str = "whisperx:") -> None:
        self._redis = client
        self._prefix = prefix

    def _voice_key(self, voice_id: str) -> str:
        return f"{self._prefix}voice:{voice_id}"

    def _owner_key(self, owner: str) -> str:
        return f"{self._prefix}voices:{owner}"

    def save(self, voice: Voice) -> None:
        with self._redis.pipeline() as pipe:  # one transaction: the index always agrees with the voices
            pipe.set(self._voice_key(voice.id), voice.to_json())
            pipe.zadd(self._owner_key(voice.owner), {voice.id: voice.created_at.timestamp()})
            pipe.execute()

    def add(self, voice: Voice, max_voices: int) -> None:
        owner_key = self._owner_key(voice.owner)
        with self._redis.pipeline() as pipe:
            while True:
                try:
                    # WATCH the owner's index: an add or delete by any process meanwhile makes this retry.
                    pipe.watch(owner_key)  # type: ignore[no-untyped-call]
                    check_room(self.list(voice.owner), voice, max_voices)
                    pipe.multi()
                    pipe.set(self._voice_key(voice.id), voice.to_json())
                    pipe.zadd(owner_key, {voice.id: voice.created_at.timestamp()})
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue

    def get(self, owner: str, voice_id: str) -> Voice | None:
        text = self._redis.get(self._voice_key(voice_id))
        voice = Voice.from_json(str(text)) if text is not None else None
        return voice if voice is not None and voice.owner == owner else None

    def list(self, owner: str) -> list[Voice]:
        ids = [str(voice_id) for voice_id in self._redis.zrange(self._owner_key(owner), 0, -1)]
        texts = self._redis.mget([self._voice_key(voice_id) for voice_id in ids]) if ids else []
        return [Voice.from_json(str(text)) for text in texts if text is not None]

    def delete(self, owner: str, voice_id: str) -> bool:
        if self.get(owner, voice_id) is None:
            return False
        with self._redis.pipeline() as pipe:
            pipe.delete(self._voice_key(voice_id))
            pipe.zrem(self._owner_key(owner), voice_id)
            pipe.execute()
        return True

    def delete_all(self, owner: str) -> int:
        ids = [str(voice_id) for voice_id in self._redis.zrange(self._owner_key(owner), 0, -1)]
        if ids:
            with self._redis.pipeline() as pipe:
                pipe.delete(*[self._voice_key(voice_id) for voice_id in ids])
                pipe.zrem(self._owner_key(owner), *ids)
                pipe.execute()
        return len(ids)
