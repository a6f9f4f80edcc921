"""Dependencies the routes declare with `Annotated`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from app.config import Settings
from app.security import API_KEY_HEADER
from app.tasks.manager import TaskManager
from app.tasks.store import TaskStore

# The key is checked by ApiKeyMiddleware before the body is read; declaring the header here
# puts the Authorize button in Swagger UI and the scheme in the OpenAPI document.
_api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="A key from API_KEYS")


def _caller(request: Request, _key: Annotated[str | None, Security(_api_key_header)]) -> str:
    """The hashed id of the caller's key, as the middleware recorded it."""
    return str(request.state.api_key_id)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _manager(request: Request) -> TaskManager:
    manager: TaskManager = request.app.state.manager
    return manager


def _store(request: Request) -> TaskStore:
    store: TaskStore = request.app.state.store
    return store


CallerDep = Annotated[str, Depends(_caller)]
SettingsDep = Annotated[Settings, Depends(_settings)]
ManagerDep = Annotated[TaskManager, Depends(_manager)]
StoreDep = Annotated[TaskStore, Depends(_store)]
