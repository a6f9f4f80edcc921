"""The API process's view of the stores: every call that can block runs off the event loop.

The stores themselves (store.py, sqlite_store.py, redis_store.py) are synchronous, because a
Celery worker (remote.py) writes the same Redis store from plain threads. In the API process a
call that waits on a disk or a network would stall every request and every SSE stream while it
waits, so the async facades here run it on the store's own threads: SQLite on one thread (one
connection, and writes keep their order), Redis on a few (a stalled Redis holds those threads,
never the loop; /live and open streams go on). The memory store never blocks and is called inline.
"""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from app.tasks.models import Task, TaskStatus
from app.tasks.store import TaskStore
from app.voices.store import Voice, VoiceStore

_P = ParamSpec("_P")
_T = TypeVar("_T")


class StoreThreads:
    """Where a store's calls run: inline (`threads=0`, a store that never blocks) or on its own threads.

    Own threads rather than asyncio's default executor, so a stalled store cannot starve the other
    work that uses that executor (probing files, querying the GPU)."""

    def __init__(self, threads: int, name: str) -> None:
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix=name) if threads else None

    async def call(self, function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        if self._executor is None:
            return function(*args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, functools.partial(function, *args, **kwargs)
        )

    def close(self) -> None:
        if self._executor is not None:
            # Calls not started yet are dropped; one stuck on an unreachable store ends within its timeout.
            self._executor.shutdown(wait=False, cancel_futures=True)


class AsyncTaskStore:
    """The TaskStore protocol, awaitable; see store.py for what each call means."""

    def __init__(self, engine: TaskStore, threads: StoreThreads) -> None:
        self.engine = engine
        """The synchronous store underneath, for code that already runs on a thread of its own."""
        self.threads = threads
        self.durable = engine.durable

    async def add(self, task: Task) -> None:
        await self.threads.call(self.engine.add, task)

    async def get(self, task_id: str) -> Task | None:
        return await self.threads.call(self.engine.get, task_id)

    async def update(self, task_id: str, **changes: Any) -> Task | None:
        return await self.threads.call(self.engine.update, task_id, **changes)

    async def delete(self, task_id: str) -> Task | None:
        return await self.threads.call(self.engine.delete, task_id)

    async def count_by_status(self) -> Counter[TaskStatus]:
        return await self.threads.call(self.engine.count_by_status)

    async def count_active(self, owner: str) -> int:
        return await self.threads.call(self.engine.count_active, owner)

    async def count_stored(self, owner: str) -> int:
        return await self.threads.call(self.engine.count_stored, owner)

    async def page(self, owner: str, status: TaskStatus | None, limit: int, offset: int) -> tuple[list[Task], int]:
        return await self.threads.call(self.engine.page, owner, status, limit, offset)

    async def unfinished(self) -> list[Task]:
        return await self.threads.call(self.engine.unfinished)

    async def ended_before(self, moment: datetime) -> list[Task]:
        return await self.threads.call(self.engine.ended_before, moment)

    async def put_delivery(self, message_id: str, record: str) -> None:
        await self.threads.call(self.engine.put_delivery, message_id, record)

    async def take_delivery(self, message_id: str) -> bool:
        return await self.threads.call(self.engine.take_delivery, message_id)

    async def drop_delivery(self, message_id: str) -> None:
        await self.threads.call(self.engine.drop_delivery, message_id)

    async def pending_deliveries(self) -> dict[str, str]:
        return await self.threads.call(self.engine.pending_deliveries)


class AsyncVoiceStore:
    """The VoiceStore protocol (app/voices/store.py), awaitable, on the task store's threads."""

    def __init__(self, engine: VoiceStore, threads: StoreThreads) -> None:
        self._engine = engine
        self._threads = threads

    async def save(self, voice: Voice) -> None:
        await self._threads.call(self._engine.save, voice)

    async def add(self, voice: Voice, max_voices: int) -> None:
        await self._threads.call(self._engine.add, voice, max_voices)

    async def get(self, owner: str, voice_id: str) -> Voice | None:
        return await self._threads.call(self._engine.get, owner, voice_id)

    async def list(self, owner: str) -> list[Voice]:
        return await self._threads.call(self._engine.list, owner)

    async def delete(self, owner: str, voice_id: str) -> bool:
        return await self._threads.call(self._engine.delete, owner, voice_id)

    async def delete_all(self, owner: str) -> int:
        return await self._threads.call(self._engine.delete_all, owner)
