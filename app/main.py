"""Application factory, lifespan and the `python -m app.main` entry point."""

from __future__ import annotations

import logging
import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import __doc__ as description
from app.api.errors import install_error_handlers
from app.api.middleware.admission import UploadAdmissionMiddleware
from app.api.middleware.api_key import ApiKeyMiddleware
from app.api.middleware.body_limit import BodyLimitMiddleware
from app.api.middleware.body_pace import BodyPaceMiddleware
from app.api.openapi import install_openapi
from app.api.routes import events, health, openai, operations, page, transcribe
from app.api.schemas import TaskStatusResponse
from app.config import Settings
from app.ops.metrics import Metrics
from app.ops.preflight import log_preflight
from app.outbound.webhooks import WebhookSender
from app.pipeline.base import PipelineFactory, whisperx_pipeline
from app.tasks.backend import TaskBackend
from app.tasks.manager import TaskManager
from app.tasks.store import MemoryTaskStore, TaskStore

logger = logging.getLogger("app")

# Forms hold one file and a few dozen short fields (the upload route has about twenty; prompts and
# URLs are at most a few kB): anything bigger is refused with 400 as it is parsed, instead of
# being held in memory (a megabyte a field and a thousand fields, by Starlette's defaults).
MAX_FORM_FIELDS = 64
MAX_FORM_FIELD_BYTES = 64 * 1024


def _api_keys(settings: Settings) -> list[str]:
    if settings.api_key_list:
        return settings.api_key_list
    # Never run open: with no key configured, make one and show it once, on the console only.
    key = secrets.token_urlsafe(24)
    print(f"API_KEYS is not set; this run accepts the generated key: {key}", file=sys.stderr, flush=True)
    return [key]


def _store(settings: Settings) -> TaskStore:
    if settings.task_backend == "celery":
        from app.tasks.redis_store import RedisTaskStore

        return RedisTaskStore.from_url(settings.redis_url)
    if settings.task_store == "sqlite":
        from app.tasks.sqlite_store import SqliteTaskStore

        return SqliteTaskStore(settings.task_db_file)
    return MemoryTaskStore()


def _backend(settings: Settings, store: TaskStore, factory: PipelineFactory) -> TaskBackend:
    if settings.task_backend == "celery":
        from app.tasks.dispatcher import CeleryDispatcher
        from app.tasks.redis_store import RedisTaskStore

        assert isinstance(store, RedisTaskStore)  # noqa: S101 - _store made it for this backend
        return CeleryDispatcher(store, settings)
    return TaskManager(store, factory, settings)


def create_app(settings: Settings | None = None, pipeline_factory: PipelineFactory | None = None) -> FastAPI:
    settings = settings or Settings()
    factory = pipeline_factory or whisperx_pipeline
    store = _store(settings)
    metrics = Metrics(store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.upload_dir.mkdir(parents=True, exist_ok=True)
        if settings.task_backend == "local":  # with celery, the workers load the models and check them
            log_preflight(settings)
        manager = _backend(settings, store, factory)
        manager.events.add_listener(metrics.task_changed)
        webhooks = WebhookSender(settings, lambda task: TaskStatusResponse.from_task(task).model_dump_json().encode())
        manager.events.add_listener(webhooks.task_changed)
        app.state.manager = manager
        await manager.start()
        try:
            yield
        finally:
            await manager.stop()
            await webhooks.aclose()

    app = FastAPI(
        title="WhisperX Transcription API",
        description=description or "",
        version="1.0.0",
        lifespan=lifespan,
        form_limits={"max_files": 1, "max_fields": MAX_FORM_FIELDS, "max_part_size": MAX_FORM_FIELD_BYTES},
    )
    app.state.settings = settings
    app.state.store = store
    app.state.metrics = metrics
    install_error_handlers(app)
    install_openapi(app)
    app.include_router(health.router)
    app.include_router(transcribe.router)
    app.include_router(events.router)
    app.include_router(openai.router)
    app.include_router(operations.router)
    app.include_router(page.router)
    app.mount(page.STATIC_PREFIX, page.static_files, name="static")
    # Added last runs first: the key is checked, then the body's size, its pace and the caller's
    # admission, all before any route reads the body.
    upload_paths = [app.url_path_for(name) for name in ("upload", "create_transcription", "create_translation")]
    app.add_middleware(
        UploadAdmissionMiddleware, upload_paths=upload_paths, max_uploads_per_key=settings.max_uploads_per_key
    )
    app.add_middleware(
        BodyPaceMiddleware, min_rate_kb=settings.body_min_rate_kb, grace_seconds=settings.body_grace_seconds
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes)
    app.add_middleware(ApiKeyMiddleware, keys=_api_keys(settings))
    return app


def __getattr__(name: str) -> FastAPI:
    # `uvicorn app.main:app` builds the app from the environment on first access only, so
    # importing this module (tests, worker processes) has no side effects.
    if name == "app":
        return create_app()
    raise AttributeError(name)


def serve(app: FastAPI, settings: Settings) -> None:
    """Run the app under uvicorn, with the settings' bounds on idle and concurrent connections."""
    import uvicorn

    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        workers=1,
        log_level=settings.log_level,
        timeout_keep_alive=settings.keep_alive_seconds,
        limit_concurrency=settings.max_connections,
    )


def main() -> None:
    settings = Settings()
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
