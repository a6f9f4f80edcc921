"""Errors on the OpenAI-compatible routes (/v1/*) in a shape OpenAI's SDKs read.

Every error here is a problem document (RFC 9457); OpenAI clients look for
`{"error": {"message", "type", "param", "code"}}` and otherwise show only "Error code: 415".
This middleware adds that `error` member to problem documents under /v1/, whoever wrote them
(routes, error handlers, or the key and size checks that answer before any route runs), so the
problem helpers stay one shape for the whole API.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PREFIX = "/v1/"
PROBLEM_JSON = b"application/problem+json"

# OpenAI's error types by status (https://platform.openai.com/docs/guides/error-codes).
_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}
_CODES = {401: "invalid_api_key", 413: "file_too_large", 415: "unsupported_file", 429: "rate_limit_exceeded"}


def openai_error(problem: dict[str, Any]) -> dict[str, Any]:
    status = int(problem.get("status", 500))
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"message": problem.get("detail", ""), "type": kind, "param": None, "code": _CODES.get(status)}


class OpenAIErrorMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        body = b""

        async def rewrite(message: Message) -> None:
            nonlocal start, body
            if message["type"] == "http.response.start":
                content_type = dict(message.get("headers", [])).get(b"content-type", b"")
                if not content_type.startswith(PROBLEM_JSON):
                    await send(message)
                    return
                start = message  # held until the whole (small) problem document is here
                return
            if start is None:
                await send(message)
                return
            body += message.get("body", b"")
            if message.get("more_body", False):
                return
            document = json.loads(body)
            encoded = json.dumps({**document, "error": openai_error(document)}).encode()
            kept = [(name, value) for name, value in start.get("headers", []) if name != b"content-length"]
            await send({**start, "headers": [*kept, (b"content-length", str(len(encoded)).encode())]})
            await send({"type": "http.response.body", "body": encoded})

        await self.app(scope, receive, rewrite)
