"""Callbacks: when a task with a `callback_url` completes or fails, POST its status document there.

Signed as Standard Webhooks (https://www.standardwebhooks.com) with the `standardwebhooks`
package: HMAC-SHA256 over the message id, a timestamp and the body, in the `webhook-id`,
`webhook-timestamp` and `webhook-signature` headers, so a receiver verifies a callback with one
library call in most languages. Failed deliveries are retried with exponential backoff; the id
stays the same across retries so receivers can drop duplicates.

The service refuses targets on loopback, private, link-local and other non-public addresses
unless WEBHOOK_ALLOW_PRIVATE is set: otherwise anyone with a key could make the server send
requests into its own network (server-side request forgery), e.g. to a cloud metadata endpoint.
The check is made on upload and again, by the transport, on every attempt (app/outbound/guard.py).

Only the status code of a receiver's answer matters: its body is never read (nor decoded), so an
answer of any size or compression costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
from standardwebhooks import Webhook

from app.config import Settings
from app.outbound.guard import GuardedTransport, Target, TargetRefused
from app.tasks.models import TERMINAL, Task

logger = logging.getLogger(__name__)


CALLBACK = Target(field="callback_url", allow_setting="WEBHOOK_ALLOW_PRIVATE")


class WebhookSender:
    """Listens to task events; delivers each finished task's status document to its callback URL."""

    def __init__(self, settings: Settings, status_document: Callable[[Task], bytes]) -> None:
        self._settings = settings
        self._status_document = status_document
        self._signer = Webhook(settings.webhook_secret.get_secret_value()) if settings.webhook_secret else None
        self._client = httpx.AsyncClient(
            timeout=settings.webhook_timeout_seconds,
            follow_redirects=False,
            # Resolved and checked on every attempt, connecting to the address checked: the name may
            # point elsewhere by now.
            transport=GuardedTransport(settings.webhook_allow_private, CALLBACK),
        )
        self._deliveries: set[asyncio.Task[None]] = set()

    def task_changed(self, task: Task, deleted: bool) -> None:
        if deleted or task.status not in TERMINAL or not task.job.callback_url or self._signer is None:
            return
        body = self._status_document(task)
        delivery = asyncio.create_task(
            self._deliver(self._signer, task.job.callback_url, f"{task.id}.{task.status}", body)
        )
        self._deliveries.add(delivery)
        delivery.add_done_callback(self._deliveries.discard)

    async def _deliver(self, signer: Webhook, url: str, message_id: str, body: bytes) -> None:
        host = urlsplit(url).hostname  # logged instead of the URL, which may carry a token
        attempts = self._settings.webhook_max_attempts
        for attempt in range(1, attempts + 1):
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
                    return
            except (httpx.HTTPError, TargetRefused) as error:
                reason = type(error).__name__ if isinstance(error, httpx.HTTPError) else str(error)
            if attempt < attempts:
                delay = self._settings.webhook_retry_base_seconds * 2 ** (attempt - 1)
                logger.info("Webhook %s to %s failed (%s); retrying in %.1f s", message_id, host, reason, delay)
                await asyncio.sleep(delay)
        logger.warning("Webhook %s to %s failed %d times (%s); giving up", message_id, host, attempts, reason)

    async def aclose(self) -> None:
        """Stop pending deliveries: a callback must not hold up shutdown."""
        pending = list(self._deliveries)
        for delivery in pending:
            delivery.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if pending:
            logger.warning("Shutdown cancelled %d webhook deliveries", len(pending))
        await self._client.aclose()
