"""TASK_BACKEND=celery: who runs which task, how often it was started, which workers are up.

A task runs under a lease, a redis-py Lock with a short timeout that its worker renews: a
second delivery of the same task (a retry, or Redis restoring an unacknowledged message)
cannot run it twice, and a lease that lapses tells the API that its worker died.
"""

from __future__ import annotations

import json
from typing import Any, cast

import redis
from redis.lock import Lock

LEASE_SECONDS = 15.0
"""How long a lease outlives its worker: a dead worker's task is requeued after about this long."""

RENEW_SECONDS = 3.0
"""How often a running task's worker renews its lease and announces itself."""

MAX_ATTEMPTS = 2
"""Starts of one task: it is retried once after its worker dies, then failed."""

STOPPED_TWICE = (
    "The worker running this task stopped unexpectedly twice (out of memory, or the machine went away); "
    "try a shorter file, or tell the server's operator."
)


class Coordination:
    def __init__(self, client: redis.Redis, prefix: str = "whisperx:") -> None:
        self._redis = client
        self._prefix = prefix

    def lease_key(self, task_id: str) -> str:
        """Where the task's lease lives; its value is the holder's token, which store writes can be conditional on."""
        return f"{self._prefix}lease:{task_id}"

    def lease(self, task_id: str) -> Lock:
        # thread_local=False: the lease is renewed from the heartbeat thread, not the one that took it.
        lock: Lock = self._redis.lock(self.lease_key(task_id), timeout=LEASE_SECONDS, thread_local=False)
        return lock

    def leased(self, task_id: str) -> bool:
        return bool(self._redis.exists(self.lease_key(task_id)))

    def holder(self, task_id: str) -> str | None:
        """The lease's token: `host:pid/random` of the process running the task."""
        return cast(str | None, self._redis.get(self.lease_key(task_id)))

    def break_lease(self, task_id: str, token: str) -> None:
        """Remove the lease if it still has this token: its holder is known to be dead."""
        key = self.lease_key(task_id)
        with self._redis.pipeline() as pipe:
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]
                if pipe.get(key) == token:
                    pipe.multi()
                    pipe.delete(key)
                    pipe.execute()
            except redis.WatchError:
                pass  # renewed or taken meanwhile: not dead after all

    def count_start(self, task_id: str, keep_seconds: float) -> int:
        """Record one more start of the task; returns how many there have been."""
        key = f"{self._prefix}starts:{task_id}"
        with self._redis.pipeline() as pipe:
            pipe.incr(key)
            pipe.expire(key, int(keep_seconds))
            return int(pipe.execute()[0])

    def starts(self, task_id: str) -> int:
        return int(cast(str | None, self._redis.get(f"{self._prefix}starts:{task_id}")) or 0)

    def announce(self, worker: str, state: dict[str, Any]) -> None:
        """A worker process says it is alive and what it has loaded; it vanishes when it stops saying so."""
        self._redis.set(f"{self._prefix}worker:{worker}", json.dumps(state), ex=int(LEASE_SECONDS))

    def workers(self) -> list[dict[str, Any]]:
        keys = list(self._redis.scan_iter(match=f"{self._prefix}worker:*", count=1000))
        values = cast(list[str | None], self._redis.mget(keys)) if keys else []
        return [json.loads(value) for value in values if value is not None]
