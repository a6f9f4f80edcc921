"""Body limits as pure ASGI middleware: a body over its route's limit is refused before it is read.

Multipart bodies to the routes that take an audio file (uploads, the OpenAI routes, enrolment
samples) may reach MAX_UPLOAD_MB (their other fields are bounded one by one as they are parsed: see
MAX_FORM_FIELD_BYTES in app/main.py); every other body, such as JSON or a form without a file,
may reach MAX_BODY_KB, so a huge JSON document is never parsed (on the event loop, before the
route has even checked that the task is the caller's). A declared `Content-Length` over the limit is
answered at once, without reading a byte; a body sent without one (chunked) is counted as it
arrives and refused as soon as it passes the limit.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import send_problem
from app.api.middleware.routes import RouteSet
from app.media import too_large_message


def body_too_large_message(limit_bytes: int) -> str:
    """Why a body without audio is refused for its size (MAX_BODY_KB)."""
    return (
        f"The request body is larger than this route's limit of {limit_bytes / 1024:g} KB (MAX_BODY_KB); "
        "only the routes that take an audio file accept more. Send a smaller body."
    )


class BodyTooLarge(HTTPException):
    """Raised from `receive`: the route's parsing stops, and the error handler answers 413.

    A Starlette HTTPException, because FastAPI re-raises those from body parsing instead of
    turning them into a generic 400.
    """

    def __init__(self, message: str) -> None:
        super().__init__(413, message, {"Connection": "close"})


def _is_multipart(scope: Scope) -> bool:
    content_type = next((value for name, value in scope["headers"] if name == b"content-type"), b"")
    return content_type.split(b";", 1)[0].strip().lower() == b"multipart/form-data"


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, upload_routes: RouteSet, max_upload_bytes: int, max_body_bytes: int) -> None:
        self.app = app
        self.upload_routes = upload_routes
        self.max_upload_bytes = max_upload_bytes
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope in self.upload_routes and _is_multipart(scope):
            limit, message = self.max_upload_bytes, too_large_message(self.max_upload_bytes)
        else:
            limit, message = self.max_body_bytes, body_too_large_message(self.max_body_bytes)
        declared = next((value for name, value in scope["headers"] if name == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await send_problem(send, 413, message)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message_in = await receive()
            if message_in["type"] == "http.request":
                received += len(message_in.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(message)
            return message_in

        await self.app(scope, counted_receive, send)
