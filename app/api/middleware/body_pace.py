"""A minimum pace for request bodies, as pure ASGI middleware: a body that stalls is cut off with 408.

A client that declares a large upload and then sends a byte every few seconds (or nothing) would
otherwise hold a connection, an upload slot and its spooled part for as long as it likes. After a
grace period, the body must keep up with BODY_MIN_RATE_KB on average: `receive` waits only as
long as what has arrived so far pays for, then raises. Only the time spent waiting for the client
counts, so a route that is slow to read does not count against it. Request heads are another
matter: the server never sees partial headers, so their pace is the reverse proxy's to bound (see
deploy/nginx.conf.template).

An answer sent before the whole body has arrived (a refusal of its form, say) closes the
connection, so the server does not go on reading, and discarding, the rest.
"""

from __future__ import annotations

import asyncio
import time

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooSlow(HTTPException):
    """Raised from `receive`: the route's form parsing stops, and the error handler answers 408.

    A Starlette HTTPException, as BodyTooLarge is, because FastAPI re-raises those from body parsing.
    """

    def __init__(self, rate_kb: float, grace_seconds: float) -> None:
        super().__init__(
            408,
            f"The request body arrived slower than this server's minimum of {rate_kb:g} KB/s (BODY_MIN_RATE_KB) "
            f"after its first {grace_seconds:g} s (BODY_GRACE_SECONDS); send it again over a faster connection.",
            {"Connection": "close"},
        )


class BodyPaceMiddleware:
    def __init__(self, app: ASGIApp, min_rate_kb: float, grace_seconds: float) -> None:
        self.app = app
        self.min_rate_kb = min_rate_kb
        self.grace_seconds = grace_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        bytes_per_second = self.min_rate_kb * 1024
        received = 0
        waited = 0.0
        headers = Headers(scope=scope)
        complete = headers.get("content-length", "0") == "0" and "transfer-encoding" not in headers

        async def paced_receive() -> Message:
            nonlocal received, waited, complete
            if complete:  # after the body, `receive` only reports a disconnect: no pace to keep
                return await receive()
            # The grace, plus the time the bytes so far pay for at the minimum rate, less what was spent.
            allowed = self.grace_seconds + received / bytes_per_second - waited
            started = time.monotonic()
            try:
                async with asyncio.timeout(max(allowed, 0.0)):
                    message = await receive()
            except TimeoutError:
                raise BodyTooSlow(self.min_rate_kb, self.grace_seconds) from None
            waited += time.monotonic() - started
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
            else:
                complete = True
            return message

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not complete:
                kept = [(name, value) for name, value in message.get("headers", []) if name.lower() != b"connection"]
                message["headers"] = [*kept, (b"connection", b"close")]
            await send(message)

        await self.app(scope, paced_receive, closing_send)
