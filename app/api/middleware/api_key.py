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
from app.keys import ApiKey

API_KEY_HEADER = "X-API-Key"

# Documentation pages stay open, so a person can read /docs and press Authorize; so does the
# web page with its files, which hold no data (every call it makes sends the key).
PUBLIC_PATHS = frozenset({"/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
PUBLIC_PREFIXES = ("/static/",)


class KeyRing:
    """The server's keys, as digests: which key id a supplied key belongs to."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        # Compare digests, so neither a key's content nor its length leaks through timing.
        self._digests = [(hashlib.sha256(key.key.get_secret_value().encode()).digest(), key.id) for key in keys]

    def owner(self, candidate: bytes) -> str | None:
        """The id of the matching key; every key is compared, so the time taken tells nothing."""
        digest = hashlib.sha256(candidate).digest()
        owner = None
        for known, key_id in self._digests:
            if hmac.compare_digest(digest, known):
                owner = key_id
        return owner


class ApiKeyMiddleware:
    """HTTP requests only: WebSocket upgrades (/v1/realtime) check the key themselves, since browsers
    send theirs as a subprotocol."""

    def __init__(self, app: ASGIApp, keys: KeyRing) -> None:
        self.app = app
        self._keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _public(scope["path"]):
            await self.app(scope, receive, send)
            return
        supplied = supplied_key(scope["headers"])
        owner = self._keys.owner(supplied) if supplied is not None else None
        if owner is None:
            reason = "Missing X-API-Key header" if supplied is None else "Invalid API key"
            await _refuse(
                send,
                f"{reason}: send a key from the server's API_KEYS in the X-API-Key header "
                "or as Authorization: Bearer <key>.",
            )
            return
        scope.setdefault("state", {})["api_key_id"] = owner
        await self.app(scope, receive, send)


def _public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def supplied_key(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
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
