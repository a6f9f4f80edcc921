"""Task changes, pushed to whoever listens: live progress streams, metrics, webhooks.

The manager publishes every change it writes to the store, so nothing has to poll the store.
Everything here runs on the event loop, called synchronously from the manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from app.tasks.models import TERMINAL, Task

logger = logging.getLogger(__name__)

MIN_EVENT_SECONDS = 0.25
"""Progress reaches a follower at most this often (a diarizer reports hundreds of steps a second);
a new stage or status, a deletion and the end are passed on at once."""

Listener = Callable[[Task, bool], None]
"""Called with the task as just written and whether it was deleted."""


class _Subscription:
    """One reader of one task's changes. It keeps only the latest state: a slow reader skips
    intermediate progress, never the end."""

    def __init__(self) -> None:
        self._latest: Task | None = None
        self._gone = False
        self._changed = asyncio.Event()

    def push(self, task: Task, deleted: bool) -> None:
        self._latest, self._gone = task, deleted
        self._changed.set()

    def gone(self) -> None:
        self._gone = True
        self._changed.set()

    async def next(self) -> tuple[Task | None, bool]:
        await self._changed.wait()
        return self.take()

    def take(self) -> tuple[Task | None, bool]:
        """The latest state, without waiting (what `next` returned last, if nothing came since)."""
        self._changed.clear()
        return self._latest, self._gone


class TaskEvents:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._subscriptions: defaultdict[str, set[_Subscription]] = defaultdict(set)

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def publish(self, task: Task, deleted: bool = False, notify_listeners: bool = True) -> None:
        """Pass a change to the task's followers and, unless told not to, to the listeners."""
        if notify_listeners:
            self.notify_listeners(task, deleted)
        for subscription in self._subscriptions.get(task.id, ()):
            subscription.push(task, deleted)

    def notify_listeners(self, task: Task, deleted: bool) -> None:
        """Pass a change to the listeners only (its followers heard of it already)."""
        for listener in self._listeners:
            try:
                listener(task, deleted)
            except Exception:  # a faulty observer must not break the manager
                logger.exception("Task event listener %r failed", listener)

    def followed(self) -> list[str]:
        """The ids of the tasks someone follows now."""
        return list(self._subscriptions)

    def refresh(self, task_id: str, task: Task | None) -> None:
        """Pass a task's state as re-read from the store (None: gone) to its followers only: the
        listeners heard of every change already, or will in order."""
        for subscription in self._subscriptions.get(task_id, ()):
            if task is None:
                subscription.gone()
            else:
                subscription.push(task, False)

    @contextlib.contextmanager
    def _subscribe(self, task_id: str) -> Iterator[_Subscription]:
        subscription = _Subscription()
        self._subscriptions[task_id].add(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions[task_id].discard(subscription)
            if not self._subscriptions[task_id]:
                del self._subscriptions[task_id]

    async def follow(self, task_id: str, get: Callable[[str], Awaitable[Task | None]]) -> AsyncIterator[Task | None]:
        """The task's state now, then each change until it ends; None when it is deleted.

        `get` re-reads the store once subscribed, so a change between the caller's read and
        the subscription is not lost.
        """
        loop = asyncio.get_running_loop()
        with self._subscribe(task_id) as subscription:
            task = await get(task_id)
            yield task
            sent_at = loop.time()
            while task is not None and task.status not in TERMINAL:
                previous = task
                task, deleted = await subscription.next()
                wait = sent_at + MIN_EVENT_SECONDS - loop.time()
                if not deleted and task is not None and _same_step(previous, task) and wait > 0:
                    await asyncio.sleep(wait)
                    task, deleted = subscription.take()  # the newest by now
                if deleted:
                    task = None
                yield task
                sent_at = loop.time()


def _same_step(before: Task, after: Task) -> bool:
    """Only the progress within one stage changed: an update that may wait."""
    return (before.status, before.stage) == (after.status, after.stage)
