"""Per-key caps on long-held requests (event streams, enrolments), checked before the route runs.

A request to a capped route holds a place in its key's cap (app/caps.py) from its admission until
it ends, however it ends; a key at its cap gets 429 before its body is read. Runs after
ApiKeyMiddleware, which records the caller.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import send_problem
from app.api.middleware.routes import RouteSet
from app.caps import RETRY_AFTER_SECONDS, CapReached, KeyCap

_RETRY_AFTER = [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())]


class KeyCapMiddleware:
    def __init__(self, app: ASGIApp, caps: Sequence[tuple[RouteSet, KeyCap]]) -> None:
        self.app = app
        self.caps = caps

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cap = next((cap for routes, cap in self.caps if scope in routes), None) if scope["type"] == "http" else None
        if cap is None:
            await self.app(scope, receive, send)
            return
        owner: str = scope["state"]["api_key_id"]
        try:
            cap.acquire(owner)
        except CapReached as refused:
            await send_problem(send, refused.status, refused.detail, _RETRY_AFTER)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            cap.release(owner)
