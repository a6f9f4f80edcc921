"""Upload admission: queue depth, active tasks and uploads in progress per key, checked before a body is read.

A client whose upload would be refused with 503 or 429 learns it from its request headers,
instead of after sending hundreds of megabytes. Runs after ApiKeyMiddleware, which records
the caller, on every route that accepts audio; the routes check the task limits again,
atomically, when they add the task.

MAX_UPLOADS_PER_KEY bounds the bodies one key may be sending at once, so one key cannot hold
the server's bandwidth and spool space with parallel uploads that its task limit would refuse
anyway once they were stored. An upload counts from its admission until its body has arrived
(or the request ends); the count is per API process.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import STORE_RETRY_AFTER_SECONDS, STORE_UNREACHABLE, STORE_UNREACHABLE_DETAIL, send_problem
from app.tasks.backend import TaskBackend
from app.tasks.limits import RETRY_AFTER_SECONDS, OverCapacity

_RETRY_AFTER = [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())]


class UploadAdmissionMiddleware:
    def __init__(self, app: ASGIApp, upload_paths: Collection[str], max_uploads_per_key: int) -> None:
        self.app = app
        self.upload_paths = frozenset(upload_paths)
        self.max_uploads_per_key = max_uploads_per_key
        self._receiving: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.upload_paths:
            await self.app(scope, receive, send)
            return
        owner: str = scope["state"]["api_key_id"]
        manager: TaskBackend | None = getattr(scope["app"].state, "manager", None)
        if manager is not None:  # None only before the lifespan has started
            try:
                await manager.check_capacity(owner)
            except OverCapacity as error:
                await send_problem(send, error.status, error.detail, _RETRY_AFTER)
                return
            except STORE_UNREACHABLE:  # outside the routes' exception handlers, so answered here
                retry = [(b"retry-after", str(STORE_RETRY_AFTER_SECONDS).encode())]
                await send_problem(send, 503, STORE_UNREACHABLE_DETAIL, retry)
                return
        if self._receiving[owner] >= self.max_uploads_per_key:
            detail = (
                "This key is already sending as many uploads at once as this server allows "
                f"({self.max_uploads_per_key}, MAX_UPLOADS_PER_KEY); wait for one to finish, then send this one."
            )
            await send_problem(send, 429, detail, _RETRY_AFTER)
            return
        self._receiving[owner] += 1
        counted = True

        def release() -> None:
            nonlocal counted
            if counted:
                counted = False
                self._receiving[owner] -= 1
                if not self._receiving[owner]:
                    del self._receiving[owner]

        async def tracked_receive() -> Message:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                release()  # the whole body is in, or the client left
            return message

        try:
            await self.app(scope, tracked_receive, send)
        finally:
            release()
