"""MAX_UPLOAD_MB as pure ASGI middleware: a body over the limit is refused before it is stored.

A declared `Content-Length` over the limit is answered at once, without reading a byte; a body
sent without one (chunked) is counted as it arrives and refused as soon as it passes the limit.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import send_problem
from app.media import too_large_message


class BodyTooLarge(HTTPException):
    """Raised from `receive`: the route's form parsing stops, and the error handler answers 413.

    A Starlette HTTPException, because FastAPI re-raises those from body parsing instead of
    turning them into a generic 400.
    """

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(413, too_large_message(limit_bytes), {"Connection": "close"})


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((value for name, value in scope["headers"] if name == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await send_problem(send, 413, too_large_message(self.max_bytes))
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counted_receive, send)
