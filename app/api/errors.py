"""One error shape everywhere: RFC 9457 problem details, with a message a person can act on."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Send

from app.api.schemas import Problem
from app.storage import StorageUnavailable

PROBLEM_JSON = "application/problem+json"


def problem_response(description: str) -> dict[str, Any]:
    """An OpenAPI `responses` entry for a problem document."""
    return {"model": Problem, "description": description, "content": {PROBLEM_JSON: {}}}


# Every protected route can answer this (ApiKeyMiddleware); declared so the schema is complete.
UNAUTHORIZED: dict[int | str, dict[str, Any]] = {401: problem_response("Missing or wrong X-API-Key")}


def problem_document(status: int, detail: str) -> dict[str, Any]:
    """The body of every error the API sends, from a route or from middleware."""
    return {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status, "detail": detail}


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(problem_document(status, detail), status_code=status, media_type=PROBLEM_JSON, headers=headers)


async def send_problem(send: Send, status: int, detail: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """A problem response straight from ASGI middleware, before any route runs."""
    encoded = json.dumps(problem_document(status, detail)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(encoded)).encode()),
                *headers,
                # The body was never read: tell the client not to reuse this connection for it.
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": encoded})


def _describe(error: Mapping[str, Any]) -> str:
    parts: Sequence[object] = error.get("loc", ())
    location = [str(part) for part in parts if part not in ("body", "query", "path", "form")]
    field = ".".join(location) or "request"
    message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
    return f"{field}: {message}"


def _allowed_methods(request: Request) -> str:
    """Every method of the routes on this path: Starlette's 405 names only the first route's,
    where several routes share a path (GET, POST and DELETE on /api/v1/speakers)."""
    methods: set[str] = set()
    for route in request.app.routes:
        if getattr(route, "methods", None) and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods
    return ", ".join(sorted(methods))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    exc = cast(StarletteHTTPException, exc)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    return problem(exc.status_code, str(exc.detail), headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    exc = cast(RequestValidationError, exc)
    return problem(422, "; ".join(_describe(error) for error in exc.errors()))


STORE_UNREACHABLE = (RedisConnectionError, RedisTimeoutError)
"""TASK_BACKEND=celery: Redis is down, restarting or not answering; the request may succeed in a moment."""
STORE_UNREACHABLE_DETAIL = "The task store (Redis) cannot be reached; retry later."
STORE_RETRY_AFTER_SECONDS = 5


async def _store_unreachable(request: Request, exc: Exception) -> JSONResponse:
    return problem(503, STORE_UNREACHABLE_DETAIL, {"Retry-After": str(STORE_RETRY_AFTER_SECONDS)})


async def _storage_unavailable(request: Request, exc: Exception) -> JSONResponse:
    return problem(503, str(exc), {"Retry-After": str(STORE_RETRY_AFTER_SECONDS)})


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # The traceback goes to the log (Starlette logs it); the client gets no internals.
    return problem(500, "Internal server error; the details are in the server log.")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for unreachable in STORE_UNREACHABLE:
        app.add_exception_handler(unreachable, _store_unreachable)
    app.add_exception_handler(StorageUnavailable, _storage_unavailable)
    app.add_exception_handler(Exception, _unexpected_error)
