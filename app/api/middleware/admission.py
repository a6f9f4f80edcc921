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

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import STORE_RETRY_AFTER_SECONDS, STORE_UNREACHABLE, STORE_UNREACHABLE_DETAIL, send_problem
from app.api.middleware.routes import RouteSet
from app.caps import CapReached, KeyCap
from app.tasks.backend import TaskBackend
from app.tasks.limits import RETRY_AFTER_SECONDS, OverCapacity

_RETRY_AFTER = [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())]


class UploadAdmissionMiddleware:
    def __init__(self, app: ASGIApp, upload_routes: RouteSet, uploads: KeyCap) -> None:
        self.app = app
        self.upload_routes = upload_routes
        self.uploads = uploads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope not in self.upload_routes:
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
        try:
            self.uploads.acquire(owner)
        except CapReached as refused:
            await send_problem(send, refused.status, refused.detail, _RETRY_AFTER)
            return
        counted = True

        def release() -> None:
            nonlocal counted
            if counted:
                counted = False
                self.uploads.release(owner)

        async def tracked_receive() -> Message:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                release()  # the whole body is in, or the client left
            return message

        try:
            await self.app(scope, tracked_receive, send)
        finally:
            release()
