"""`/v1/realtime?intent=transcription`: live transcription over OpenAI's Realtime protocol (WebSocket).

The upgrade is checked before it is accepted, so a refused client gets an HTTP answer (a problem
document) it can act on: the key (`Authorization: Bearer`, `X-API-Key`, or the
`openai-insecure-api-key.<key>` subprotocol browsers send; never the URL, which ends up in logs),
the intent, the backend, and the session caps. An accepted session ends with an `error` event and a
close when the client breaks the protocol, sends faster than it can be transcribed, stays silent
past LIVE_IDLE_TIMEOUT_SECONDS, or reaches LIVE_MAX_SESSION_SECONDS. Audio and text are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from app.api.errors import problem_document
from app.api.middleware.api_key import KeyRing, supplied_key
from app.api.routes.speakers import owned_voices
from app.config import Settings
from app.live.capacity import LiveSessions, SessionRefused
from app.live.protocol import ProtocolError, error_event, parse, server_event, session_document
from app.live.session import LiveSession, SessionEnded
from app.live.worker import LiveWorker, LiveWorkerFailed

logger = logging.getLogger(__name__)

router = APIRouter(tags=["live"])

KEY_SUBPROTOCOL = "openai-insecure-api-key."
KEY_QUERY_NAMES = frozenset({"api_key", "apikey", "api-key", "key", "token", "access_token", "x-api-key"})
SEND_TIMEOUT_SECONDS = 10.0
"""A client that reads nothing for this long while the server has events for it is closed."""
POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011


def _admit(websocket: WebSocket, settings: Settings, keys: KeyRing) -> tuple[str, str | None]:
    """The caller's key id and the subprotocol to accept; SessionRefused when the upgrade is refused."""
    query = websocket.query_params
    if any(name.lower() in KEY_QUERY_NAMES for name in query):
        raise SessionRefused(
            401, "Keys are never taken from the URL (URLs end up in logs): send the key as Authorization: Bearer "
            "<key>, X-API-Key, or, from a browser, the subprotocol openai-insecure-api-key.<key>",
        )  # fmt: skip
    offered = list(websocket.scope.get("subprotocols") or [])
    key = supplied_key(websocket.scope["headers"])
    if key is None:
        key = next((p[len(KEY_SUBPROTOCOL) :].encode() for p in offered if p.startswith(KEY_SUBPROTOCOL)), None)
    owner = keys.owner(key) if key else None
    if owner is None:
        reason = "Missing API key" if key is None else "Invalid API key"
        raise SessionRefused(
            401, f"{reason}: send a key from the server's API_KEYS as Authorization: Bearer <key>, X-API-Key, "
            "or the subprotocol openai-insecure-api-key.<key>",
        )  # fmt: skip
    if query.get("intent") != "transcription":
        raise SessionRefused(
            400, "This server holds transcription sessions only: connect to /v1/realtime?intent=transcription"
        )
    if settings.task_backend != "local":
        raise SessionRefused(
            503, "Live sessions run on the API process's own live worker, which only TASK_BACKEND=local starts; "
            "serve live sessions from an API process with TASK_BACKEND=local",
        )  # fmt: skip
    if settings.max_live_sessions == 0:
        raise SessionRefused(503, "Live transcription is off on this server (MAX_LIVE_SESSIONS=0)")
    return owner, "realtime" if "realtime" in offered else None


async def _refuse(websocket: WebSocket, refused: SessionRefused) -> None:
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        body = problem_document(refused.status, refused.detail)
        await websocket.send_denial_response(JSONResponse(body, refused.status))
    else:  # a server without denial responses: the close code and reason say it
        await websocket.close(POLICY_VIOLATION, refused.detail[:120])


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket) -> None:
    state = websocket.app.state
    settings: Settings = state.settings
    sessions: LiveSessions = state.live_sessions
    try:
        owner, subprotocol = _admit(websocket, settings, state.key_ring)
        sessions.open(owner)
    except SessionRefused as refused:
        await _refuse(websocket, refused)
        return
    try:
        enrolled = await owned_voices(state.voices, owner, None)
        await websocket.accept(subprotocol=subprotocol)
        await _serve(websocket, settings, state.live_worker, enrolled)
    finally:
        sessions.close(owner)


async def _serve(
    websocket: WebSocket, settings: Settings, worker: LiveWorker, enrolled: tuple[dict[str, Any], ...]
) -> None:
    lock = asyncio.Lock()

    async def send(event: dict[str, Any]) -> None:
        async with lock:
            await asyncio.wait_for(websocket.send_text(json.dumps(event)), SEND_TIMEOUT_SECONDS)

    session = LiveSession(worker.call, send, enrolled)
    code = 1000
    try:
        await worker.ready()
        await send(server_event("session.created", session=session_document(session.id, session.config)))
        processing = asyncio.create_task(session.run())
        receiving = asyncio.create_task(_receive(websocket, session, settings.live_idle_timeout_seconds))
        done, _ = await asyncio.wait(
            {processing, receiving}, timeout=settings.live_max_session_seconds, return_when=asyncio.FIRST_COMPLETED
        )
        for task in (processing, receiving):
            task.cancel()
        if not done:
            raise SessionEnded(
                "session_expired",
                f"The session reached LIVE_MAX_SESSION_SECONDS ({settings.live_max_session_seconds:g} s)",
            )
        for task in done:
            task.result()  # raises what ended the session
    except (WebSocketDisconnect, TimeoutError, OSError):
        return  # the client left, or reads nothing: nobody to tell
    except ProtocolError as error:
        code = POLICY_VIOLATION
        await _last_word(send, error_event(error.code, str(error), error.param))
    except SessionEnded as ended:
        code = POLICY_VIOLATION
        await _last_word(send, error_event(ended.code, str(ended)))
    except LiveWorkerFailed as failed:
        code = INTERNAL_ERROR
        await _last_word(send, error_event("live_worker_failed", str(failed)))
    with contextlib.suppress(Exception):
        await websocket.close(code)


async def _last_word(send: Any, event: dict[str, Any]) -> None:
    with contextlib.suppress(Exception):
        await send(event)


async def _receive(websocket: WebSocket, session: LiveSession, idle_seconds: float) -> None:
    receiving: asyncio.Future[Any] | None = None
    try:
        while True:
            receiving = receiving or asyncio.ensure_future(websocket.receive())
            done, _ = await asyncio.wait({receiving}, timeout=idle_seconds)
            if not done:
                if not session.idle:  # still transcribing what came: the client may well wait for it
                    continue
                raise SessionEnded(
                    "idle_timeout", f"Nothing was sent for {idle_seconds:g} s (LIVE_IDLE_TIMEOUT_SECONDS)"
                )
            message, receiving = receiving.result(), None
            _take(session, message)
    finally:
        if receiving is not None:
            receiving.cancel()


def _take(session: LiveSession, message: Any) -> None:
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    text = message.get("text")
    if text is None:
        raise ProtocolError("invalid_event", "Events are JSON text frames, not binary ones")
    session.take(parse(text, session.config))
