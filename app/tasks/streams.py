"""TASK_BACKEND=celery: the Redis Streams the task store appends to, as the API processes read them.

Why streams rather than pub/sub: a published message reaches only the processes listening at that
instant, so a task that ended while an API process restarted or reconnected never reached it. A
stream keeps what was appended, in the same transaction as the change itself (redis_store.py):

- `ChangeFeed`: every API process reads every change from where it left off, and re-reads the
  tasks it follows after a reconnect (in case the stream was trimmed past that point), so an event
  stream or an OpenAI request waiting on a task sees its end whatever happened to the connection.
- `CallbackQueue`: the callbacks owed, read as a consumer group, so each is handed to one API process
  and stays in that process's pending list until it is delivered or given up. A process keeps the
  ones it holds by touching them (resetting their idle time) every third of API_TAKEOVER_SECONDS;
  one idle for longer than that belongs to a process that died, and the next to look claims it
  (XAUTOCLAIM).
  A process that starts therefore never takes a callback another live process is still retrying.

Redis keeps the bookkeeping (which process holds what, since when), rather than hand-written locks.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, cast

import redis.asyncio
import redis.exceptions

from app.tasks.models import Task
from app.tasks.redis_store import RedisTaskStore

logger = logging.getLogger(__name__)

READ_BLOCK_SECONDS = 5.0
"""How long one read waits for new entries before it is made again."""

GROUP = "webhooks"


async def cancel_until_done(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the tasks and wait for them to end, cancelling again those still running each second.

    redis-py can swallow a cancellation: the change-feed loop was seen marked as cancelling yet
    waiting in a new read (a cancel that lands as a read's socket timeout expires can come out as a
    TimeoutError, which the loop takes for Redis being away). One cancel() then left shutdown
    waiting for ever."""
    while pending := [task for task in tasks if not task.done()]:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=1.0)
    await asyncio.gather(*tasks, return_exceptions=True)  # their errors retrieved: nothing logged at exit


def async_client(url: str) -> redis.asyncio.Redis:
    # Reads block for READ_BLOCK_SECONDS; a connection silent for longer than that and a margin is broken.
    return redis.asyncio.Redis.from_url(
        url, decode_responses=True, socket_timeout=READ_BLOCK_SECONDS + 10, socket_connect_timeout=10
    )


class ChangeFeed:
    """Every task change, in order, from where this reader left off."""

    def __init__(self, url: str, store: RedisTaskStore) -> None:
        self._url = url
        self._redis: redis.asyncio.Redis | None = None
        self._store = store
        self._last: str | None = None

    async def read(self) -> list[tuple[Task, bool]]:
        """The next changes as (task without its result, deleted), waiting a while for some; raises
        when Redis cannot be reached (call again: it carries on where it left off)."""
        try:
            return await self._read()
        except BaseException:
            # A read cut short may leave its answer on the way: the next read starts on a new connection.
            await self.close()
            raise

    async def _read(self) -> list[tuple[Task, bool]]:
        if self._redis is None:
            self._redis = async_client(self._url)
        if self._last is None:
            # Where the stream ends now: a new reader starts there (followers read the store first).
            newest: Any = await self._redis.xrevrange(self._store.changes, count=1)
            self._last = str(newest[0][0]) if newest else "0-0"
        answer: Any = await self._redis.xread(
            {self._store.changes: self._last}, count=500, block=int(READ_BLOCK_SECONDS * 1000)
        )
        changes = []
        for _stream, entries in answer or []:
            for entry_id, fields in entries:
                self._last = entry_id
                task = self._store.load(json.loads(fields["task"]))
                if task is not None:
                    changes.append((task, fields["deleted"] == "1"))
        return changes

    async def close(self) -> None:
        if self._redis is not None:
            client, self._redis = self._redis, None
            await client.aclose()


class CallbackQueue:
    """The callbacks owed, shared by the API processes; each is held by one until `done`."""

    def __init__(self, client: redis.asyncio.Redis, store: RedisTaskStore, consumer: str, lease_seconds: float) -> None:
        self._redis = client
        self._store = store
        self._consumer = consumer
        self.lease_seconds = lease_seconds
        """How long a callback stays with a process that stopped touching it (API_TAKEOVER_SECONDS)."""
        self.touch_seconds = lease_seconds / 3
        """How often a process touches the callbacks it holds, and looks for lapsed ones."""
        self.held: dict[str, str] = {}
        """Entries this process holds, by entry id: their message ids."""
        self._group_made = False

    async def _group(self) -> None:
        if self._group_made:
            return
        try:
            await self._redis.xgroup_create(self._store.callbacks, GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._group_made = True

    def _group_lost(self, error: redis.exceptions.ResponseError) -> None:
        if "NOGROUP" in str(error):  # the stream was removed (Redis emptied): made again on the next call
            self._group_made = False

    async def take(self) -> list[tuple[str, Task, str]]:
        """New callbacks for this process, waiting a while for some: (entry id, task as it ended, status)."""
        await self._group()
        try:
            answer: Any = await self._redis.xreadgroup(
                GROUP, self._consumer, {self._store.callbacks: ">"}, count=20, block=int(READ_BLOCK_SECONDS * 1000)
            )
        except redis.exceptions.ResponseError as error:
            self._group_lost(error)
            raise
        return await self._held([entry for _stream, entries in answer or [] for entry in entries])

    async def claim_lapsed(self) -> list[tuple[str, Task, str]]:
        """Callbacks whose process stopped touching them `lease_seconds` ago, now this process's."""
        await self._group()
        lapsed: list[tuple[str, dict[str, str]]] = []
        start = "0-0"
        while True:
            try:
                answer: Any = await self._redis.xautoclaim(
                    self._store.callbacks, GROUP, self._consumer, int(self.lease_seconds * 1000), start, count=50
                )
            except redis.exceptions.ResponseError as error:
                self._group_lost(error)
                raise
            start, entries = answer[0], answer[1]
            lapsed += [entry for entry in entries if entry[1] is not None]
            if start == "0-0":
                break
        for entry_id, _ in lapsed:
            logger.info("Taking over callback %s from an API process that stopped", entry_id)
        return await self._held(lapsed)

    async def _held(self, entries: list[tuple[str, dict[str, str]]]) -> list[tuple[str, Task, str]]:
        taken = []
        for entry_id, fields in entries:
            if entry_id in self.held:
                continue  # already being delivered here (touched late)
            task = self._store.load(json.loads(fields["task"]))
            if task is None:  # refused (logged): never to be sent
                await self.done(entry_id)
                continue
            self.held[entry_id] = f"{task.id}.{fields['status']}"
            taken.append((entry_id, task, fields["status"]))
        return taken

    async def touch(self) -> None:
        """Keep the callbacks this process holds: reset their idle time, so no other process takes them.

        One this process was too slow to touch, and another took over, is let go (`held` no longer has it)."""
        if not self.held:
            return
        mine = await self._redis.xpending_range(
            self._store.callbacks, GROUP, min="-", max="+", count=len(self.held) + 100, consumername=self._consumer
        )
        still = {entry["message_id"] for entry in mine}
        for entry_id in [entry_id for entry_id in self.held if entry_id not in still]:
            logger.warning("Callback %s was taken over by another API process", self.held.pop(entry_id))
        if self.held:
            await self._redis.xclaim(self._store.callbacks, GROUP, self._consumer, 0, list(self.held), justid=True)

    async def saved(self, message_id: str) -> str | None:
        """The retry record its previous holder kept (attempts made, next try), if any."""
        return cast(str | None, await self._redis.hget(self._store.key("deliveries"), message_id))

    async def keep(self, message_id: str, record: str) -> None:
        await self._redis.hset(self._store.key("deliveries"), message_id, record)

    async def done(self, entry_id: str) -> None:
        """Delivered or given up: gone from the queue and from this process's list."""
        message_id = self.held.pop(entry_id, None)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(self._store.callbacks, GROUP, entry_id)
            pipe.xdel(self._store.callbacks, entry_id)
            if message_id is not None:
                pipe.hdel(self._store.key("deliveries"), message_id)
            await pipe.execute()

    async def release(self) -> None:
        """Shutting down: mark what this process holds as lapsed, so another process takes it up at once."""
        if self.held:
            idle = int(self.lease_seconds * 1000) + 1
            await self._redis.xclaim(
                self._store.callbacks, GROUP, self._consumer, 0, list(self.held), idle=idle, justid=True
            )
            self.held.clear()

    async def close(self) -> None:
        await self._redis.aclose()
