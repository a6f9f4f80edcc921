"""Queue depth and active tasks per key, checked before an upload's body is read.

A client whose upload would be refused with 503 or 429 learns it from its request headers,
instead of after sending hundreds of megabytes. Runs after ApiKeyMiddleware, which records
the caller; the upload route checks again, atomically, when it adds the task.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import send_problem
from app.tasks.backend import TaskBackend
from app.tasks.limits import RETRY_AFTER_SECONDS, OverCapacity


class UploadAdmissionMiddleware:
    def __init__(self, app: ASGIApp, upload_path: str) -> None:
        self.app = app
        self.upload_path = upload_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == self.upload_path:
            manager: TaskBackend | None = getattr(scope["app"].state, "manager", None)
            if manager is not None:  # None only before the lifespan has started
                try:
                    manager.check_capacity(scope["state"]["api_key_id"])
                except OverCapacity as error:
                    retry = [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())]
                    await send_problem(send, error.status, error.detail, retry)
                    return
        await self.app(scope, receive, send)
