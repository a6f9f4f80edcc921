"""API-key check as pure ASGI middleware.

It runs before FastAPI parses anything, so a request without a valid key is refused before
a single byte of its (possibly huge) upload body is read. The key comes in `X-API-Key` or,
as OpenAI clients and Prometheus send it, in `Authorization: Bearer <key>`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import send_problem

API_KEY_HEADER = "X-API-Key"

# Documentation pages stay open, so a person can read /docs and press Authorize; so does the
# web page with its files, which hold no data (every call it makes sends the key).
PUBLIC_PATHS = frozenset({"/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
PUBLIC_PREFIXES = ("/static/",)


def key_id(key: str) -> str:
    """A stable, non-reversible name for a key: what logs and task ownership may hold."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, keys: Iterable[str]) -> None:
        self.app = app
        # Compare digests, so neither a key's content nor its length leaks through timing.
        self._digests = [hashlib.sha256(key.encode()).digest() for key in keys]

    def _valid(self, candidate: bytes) -> bool:
        digest = hashlib.sha256(candidate).digest()
        matches = [hmac.compare_digest(digest, known) for known in self._digests]
        return any(matches)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _public(scope["path"]):
            await self.app(scope, receive, send)
            return
        supplied = _supplied_key(scope["headers"])
        if supplied is None or not self._valid(supplied):
            reason = "Missing X-API-Key header" if supplied is None else "Invalid API key"
            await _refuse(
                send,
                f"{reason}: send a key from the server's API_KEYS in the X-API-Key header "
                "or as Authorization: Bearer <key>.",
            )
            return
        scope.setdefault("state", {})["api_key_id"] = key_id(supplied.decode("latin-1"))
        await self.app(scope, receive, send)


def _public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _supplied_key(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """X-API-Key if present, else a Bearer token."""
    api_key_header = API_KEY_HEADER.lower().encode()
    bearer = None
    for name, value in headers:
        if name == api_key_header:
            return value
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                bearer = token.strip()
    return bearer


async def _refuse(send: Send, detail: str) -> None:
    await send_problem(send, 401, detail, [(b"www-authenticate", f"Bearer, {API_KEY_HEADER}".encode())])
