"""Dependencies the routes declare with `Annotated`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.api.middleware.api_key import API_KEY_HEADER
from app.config import Settings
from app.formats.exports import SubtitleOptions
from app.ops.metrics import Metrics
from app.storage import Storage
from app.tasks.async_store import AsyncTaskStore, AsyncVoiceStore
from app.tasks.backend import TaskBackend
from app.tasks.models import Task
from app.voices.enrollment import SampleEmbedder

# The key is checked by ApiKeyMiddleware before the body is read; declaring the header here
# puts the Authorize button in Swagger UI and the scheme in the OpenAPI document.
_api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="A key from API_KEYS")
_bearer = HTTPBearer(auto_error=False, description="A key from API_KEYS, as OpenAI clients send it")


def _caller(
    request: Request,
    _key: Annotated[str | None, Security(_api_key_header)],
    _token: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> str:
    """The id of the caller's key (API_KEYS' `id:`, or a hash of a bare key), as the middleware recorded it."""
    return str(request.state.api_key_id)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _manager(request: Request) -> TaskBackend:
    manager: TaskBackend = request.app.state.manager
    return manager


def _store(request: Request) -> AsyncTaskStore:
    store: AsyncTaskStore = request.app.state.store
    return store


def _voices(request: Request) -> AsyncVoiceStore:
    voices: AsyncVoiceStore = request.app.state.voices
    return voices


def _sample_embedder(request: Request) -> SampleEmbedder:
    embedder: SampleEmbedder = request.app.state.sample_embedder
    return embedder


def _storage(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


def _metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


def _subtitle_options(
    max_line_width: Annotated[int, Query(ge=10, le=200, description="srt/vtt: characters per line")] = 42,
    max_line_count: Annotated[int, Query(ge=1, le=10, description="srt/vtt: lines per cue")] = 2,
    highlight_words: Annotated[bool, Query(description="srt/vtt: one cue per word, the word underlined")] = False,
) -> SubtitleOptions:
    return SubtitleOptions(max_line_width, max_line_count, highlight_words)


CallerDep = Annotated[str, Depends(_caller)]
SettingsDep = Annotated[Settings, Depends(_settings)]
ManagerDep = Annotated[TaskBackend, Depends(_manager)]
StoreDep = Annotated[AsyncTaskStore, Depends(_store)]
SubtitleOptionsDep = Annotated[SubtitleOptions, Depends(_subtitle_options)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
VoiceStoreDep = Annotated[AsyncVoiceStore, Depends(_voices)]
SampleEmbedderDep = Annotated[SampleEmbedder, Depends(_sample_embedder)]
StorageDep = Annotated[Storage, Depends(_storage)]


def not_found(task_id: str) -> HTTPException:
    return HTTPException(
        404,
        f"No task with id {task_id[:60]!r} for this API key; it may have been deleted or have expired "
        "(TASK_TTL_HOURS).",
    )


async def _owned_task(task_id: str, caller: CallerDep, store: StoreDep) -> Task:
    task = await store.get(task_id)
    # Another key's task answers exactly like a missing one: ids of others' tasks leak nothing.
    if task is None or task.owner != caller:
        raise not_found(task_id)
    return task


OwnedTaskDep = Annotated[Task, Depends(_owned_task)]
