"""Callbacks: when a task with a `callback_url` completes or fails, POST its status document there.

Signed as Standard Webhooks (https://www.standardwebhooks.com) with the `standardwebhooks`
package: HMAC-SHA256 over the message id, a timestamp and the body, in the `webhook-id`,
`webhook-timestamp` and `webhook-signature` headers, so a receiver verifies a callback with one
library call in most languages. Each API key id has its own signing secret, derived from
WEBHOOK_SECRET and the id (`key_secret`), which only that key can read (GET /api/v1/webhook-secret):
one tenant cannot forge callbacks that another tenant's receiver would accept. Failed deliveries
are retried with exponential backoff; the id (`{task_id}.{status}`) stays the same across retries
and processes, so receivers can drop duplicates. Every delivery is kept in the task store until it
succeeds or gives up, so a restart resumes the pending ones (same id, the remaining tries).

Where a delivery comes from depends on the backend. Either way the store records it in the same
write as the change that owes it, so a crash right after a task ended cannot lose its callback. On
the local backend the store writes the delivery record (`owed_delivery`) in the change's SQLite
transaction, and this process sends it as the task's events report the change. With
TASK_BACKEND=celery the store queues it in the change's Redis transaction, and the API processes
take it from a shared queue
(app/tasks/streams.py): one process holds it while it tries, and another takes it up only once that
one has stopped (died, or shut down), so a callback is neither lost nor sent by two processes.
Renaming a task's speakers sends nothing: it is the caller's own change, answered with the result.

The service refuses targets on loopback, private, link-local and other non-public addresses
unless WEBHOOK_ALLOW_PRIVATE is set: otherwise anyone with a key could make the server send
requests into its own network (server-side request forgery), e.g. to a cloud metadata endpoint.
The check is made on upload and again, by the transport, on every attempt (app/outbound/guard.py).

Only the status code of a receiver's answer matters: its body is never read (nor decoded), so an
answer of any size or compression costs nothing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr
from standardwebhooks import Webhook

from app.config import Settings
from app.outbound.guard import GuardedTransport, Target, TargetRefused
from app.tasks.async_store import AsyncTaskStore
from app.tasks.models import TERMINAL, Task
from app.tasks.store import OwedCallback
from app.tasks.streams import CallbackQueue, cancel_until_done

logger = logging.getLogger(__name__)


CALLBACK = Target(field="callback_url", allow_setting="WEBHOOK_ALLOW_PRIVATE")


def key_secret(server_secret: SecretStr, key_id: str) -> str:
    """The signing secret of one key id, in Standard Webhooks form (`whsec_` + base64).

    An HMAC of the id under the server's secret: stable across restarts and processes, different
    for every id, and telling nothing about the server's secret or any other id's.
    """
    # The secret's bytes, read as standardwebhooks reads it (optional prefix, padding optional).
    root = base64.b64decode(server_secret.get_secret_value().removeprefix("whsec_") + "==")
    derived = hmac.new(root, b"whisperx-api webhook key:" + key_id.encode(), hashlib.sha256).digest()
    return "whsec_" + base64.b64encode(derived).decode()


@dataclass(frozen=True)
class Delivery:
    """One callback, as the store keeps it until it is delivered or given up."""

    message_id: str
    owner: str
    """The key id whose secret signs it."""
    url: str
    body: str
    attempts_made: int = 0
    next_attempt_at: float = 0.0
    """Unix time of the next try."""


def _delivery(task: Task, settings: Settings, status_document: Callable[[Task], bytes]) -> Delivery | None:
    """The callback a task owes in its current state, as its first try; None when there is none to send."""
    if not task.job.callback_url or settings.webhook_secret is None:
        return None
    body = status_document(task).decode()
    return Delivery(f"{task.id}.{task.status}", task.owner, task.job.callback_url, body, 0, time.time())


def owed_delivery(settings: Settings, status_document: Callable[[Task], bytes]) -> OwedCallback:
    """The record the local backend's store writes with a task's ending (app/tasks/store.py)."""

    def record(task: Task) -> tuple[str, str] | None:
        delivery = _delivery(task, settings, status_document)
        return None if delivery is None else (delivery.message_id, json.dumps(asdict(delivery)))

    return record


class _Ledger(Protocol):
    """Where a delivery is kept while it is tried."""

    async def keep(self, delivery: Delivery) -> None:
        """Save its progress (tries made, when the next is due) for whichever process resumes it."""
        ...

    async def done(self, delivery: Delivery) -> None:
        """Delivered or given up."""
        ...

    def holds(self, delivery: Delivery) -> bool:
        """False once another process has taken it over: this one stops trying."""
        ...


class _StoreLedger:
    """The local backend's: a record in the task store, which the next run resumes."""

    def __init__(self, store: AsyncTaskStore) -> None:
        self._store = store

    async def keep(self, delivery: Delivery) -> None:
        await self._store.put_delivery(delivery.message_id, json.dumps(asdict(delivery)))

    async def done(self, delivery: Delivery) -> None:
        await self._store.drop_delivery(delivery.message_id)

    def holds(self, delivery: Delivery) -> bool:
        return True


class _QueueLedger:
    """TASK_BACKEND=celery: an entry of the shared callback queue, held by this process."""

    def __init__(self, queue: CallbackQueue, entry_id: str) -> None:
        self._queue = queue
        self._entry_id = entry_id

    async def keep(self, delivery: Delivery) -> None:
        await self._queue.keep(delivery.message_id, json.dumps(asdict(delivery)))

    async def done(self, delivery: Delivery) -> None:
        await self._queue.done(self._entry_id)

    def holds(self, delivery: Delivery) -> bool:
        return self._entry_id in self._queue.held


class WebhookSender:
    """Delivers each finished task's status document to its callback URL: from the task events on the
    local backend (`task_changed`, `resume`), from the shared queue with Celery (`consume`)."""

    def __init__(self, settings: Settings, store: AsyncTaskStore, status_document: Callable[[Task], bytes]) -> None:
        self._settings = settings
        self._store = store
        self._ledger = _StoreLedger(store)
        self._status_document = status_document
        self._client = httpx.AsyncClient(
            timeout=settings.webhook_timeout_seconds,
            follow_redirects=False,
            # Resolved and checked on every attempt, connecting to the address checked: the name may
            # point elsewhere by now.
            transport=GuardedTransport(settings.webhook_allow_private, CALLBACK),
        )
        self._deliveries: set[asyncio.Task[None]] = set()
        self._queue: CallbackQueue | None = None
        self._consuming: asyncio.Task[None] | None = None

    def _delivery(self, task: Task) -> Delivery | None:
        return _delivery(task, self._settings, self._status_document)

    def task_changed(self, task: Task, deleted: bool) -> None:
        if deleted or task.status not in TERMINAL or (delivery := self._delivery(task)) is None:
            return
        # The store wrote its record with the change (`owed_delivery`): a restart resumes it from there.
        self._start(delivery, self._ledger, save_first=False)

    async def resume(self) -> None:
        """Take up the deliveries a previous run left pending (each by one process only)."""
        for message_id, record in (await self._store.pending_deliveries()).items():
            if not await self._store.take_delivery(message_id):
                continue  # another process sharing the store took it
            if self._settings.webhook_secret is None:
                logger.warning("Webhook %s dropped: WEBHOOK_SECRET is no longer set", message_id)
                continue
            logger.info("Resuming webhook %s left pending by the previous run", message_id)
            self._start(Delivery(**json.loads(record)), self._ledger, save_first=True)

    def consume(self, queue: CallbackQueue) -> None:
        """Deliver the callbacks of the shared queue (TASK_BACKEND=celery) until `aclose`."""
        self._queue = queue
        self._consuming = asyncio.create_task(self._consume(queue), name="callbacks")

    async def _consume(self, queue: CallbackQueue) -> None:
        keeping = asyncio.create_task(self._keep_held(queue), name="callbacks-held")
        try:
            while True:
                try:
                    for entry_id, task, status in await queue.take():
                        await self._take_up(queue, entry_id, task, status)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.warning("Could not read the callback queue; trying again", exc_info=True)
                    await asyncio.sleep(1.0)
        finally:
            keeping.cancel()

    async def _keep_held(self, queue: CallbackQueue) -> None:
        """Touch the callbacks this process holds, and take up those another process left."""
        while True:
            try:
                await queue.touch()
                for entry_id, task, status in await queue.claim_lapsed():
                    await self._take_up(queue, entry_id, task, status)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("Could not keep the callbacks this process holds", exc_info=True)
            await asyncio.sleep(queue.touch_seconds)

    async def _take_up(self, queue: CallbackQueue, entry_id: str, task: Task, status: str) -> None:
        ledger = _QueueLedger(queue, entry_id)
        delivery = self._delivery(task)
        if delivery is None:  # no WEBHOOK_SECRET here: nothing can be signed
            logger.warning("Webhook %s.%s dropped: WEBHOOK_SECRET is not set", task.id, status)
            await queue.done(entry_id)
            return
        if (saved := await queue.saved(delivery.message_id)) is not None:
            delivery = Delivery(**json.loads(saved))  # where the process that left it had got to
        self._start(delivery, ledger, save_first=False)

    def _start(self, delivery: Delivery, ledger: _Ledger, save_first: bool) -> None:
        running = asyncio.create_task(self._deliver(delivery, ledger, save_first))
        self._deliveries.add(running)
        running.add_done_callback(self._deliveries.discard)

    async def _deliver(self, delivery: Delivery, ledger: _Ledger, save_first: bool) -> None:
        """Send until it succeeds or the tries run out; kept by `ledger` meanwhile."""
        assert self._settings.webhook_secret is not None  # noqa: S101 - checked before a delivery starts
        if save_first:
            await self._keep(ledger, delivery)
        signer = Webhook(key_secret(self._settings.webhook_secret, delivery.owner))
        message_id, url, body = delivery.message_id, delivery.url, delivery.body.encode()
        host = urlsplit(url).hostname  # logged instead of the URL, which may carry a token
        attempts = self._settings.webhook_max_attempts
        await asyncio.sleep(max(0.0, delivery.next_attempt_at - time.time()))
        reason = "no tries left"
        for attempt in range(delivery.attempts_made + 1, attempts + 1):
            if not ledger.holds(delivery):
                return  # another process has taken it over
            try:
                now = datetime.now(UTC)
                headers = {
                    "content-type": "application/json",
                    "accept-encoding": "identity",
                    "webhook-id": message_id,
                    "webhook-timestamp": str(int(now.timestamp())),
                    "webhook-signature": signer.sign(message_id, now, body.decode()),
                }
                # Streamed, and closed unread: only the status line and headers are received.
                async with self._client.stream("POST", url, content=body, headers=headers) as response:
                    delivered, reason = response.is_success, f"HTTP {response.status_code}"
                if delivered:
                    logger.info("Webhook %s delivered to %s (attempt %d)", message_id, host, attempt)
                    await self._forget(ledger, delivery)
                    return
            except (httpx.HTTPError, TargetRefused) as error:
                reason = type(error).__name__ if isinstance(error, httpx.HTTPError) else str(error)
            if attempt < attempts:
                delay = self._settings.webhook_retry_base_seconds * 2 ** (attempt - 1)
                logger.info("Webhook %s to %s failed (%s); retrying in %.1f s", message_id, host, reason, delay)
                delivery = replace(delivery, attempts_made=attempt, next_attempt_at=time.time() + delay)
                await self._keep(ledger, delivery)
                await asyncio.sleep(delay)
        logger.warning("Webhook %s to %s failed %d times (%s); giving up", message_id, host, attempts, reason)
        await self._forget(ledger, delivery)

    async def _keep(self, ledger: _Ledger, delivery: Delivery) -> None:
        """Save the delivery for a restart; one the store cannot take is still sent by this run."""
        try:
            await ledger.keep(delivery)
        except Exception as error:  # noqa: BLE001 - the store away for a moment must not stop the callback
            logger.warning("Webhook %s could not be saved for a restart: %s", delivery.message_id, error)

    async def _forget(self, ledger: _Ledger, delivery: Delivery) -> None:
        try:
            await ledger.done(delivery)
        except Exception as error:  # noqa: BLE001 - a restart would send it again: receivers dedupe by webhook-id
            logger.warning("Webhook %s could not be removed from the store: %s", delivery.message_id, error)

    async def aclose(self) -> None:
        """Stop pending deliveries (the store keeps them for the next run): a callback must not hold up shutdown."""
        pending = list(self._deliveries)
        stopping = [*pending, *([self._consuming] if self._consuming else [])]
        await cancel_until_done(stopping)
        if self._queue is not None:
            # What this process held goes to another at once, rather than after the lease lapses.
            with contextlib.suppress(Exception):
                await self._queue.release()
            await self._queue.close()
        if pending:
            logger.warning("Shutdown cancelled %d webhook deliveries", len(pending))
        await self._client.aclose()
