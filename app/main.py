"""Application factory, lifespan and the `python -m app.main` entry point."""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import __doc__ as description
from app.api.errors import install_error_handlers
from app.api.middleware.admission import UploadAdmissionMiddleware
from app.api.middleware.api_key import ApiKeyMiddleware, KeyRing
from app.api.middleware.body_limit import BodyLimitMiddleware
from app.api.middleware.body_pace import BodyPaceMiddleware
from app.api.middleware.key_caps import KeyCapMiddleware
from app.api.middleware.openai_errors import OpenAIErrorMiddleware
from app.api.middleware.routes import RouteSet
from app.api.openapi import install_openapi
from app.api.routes import (
    docs,
    events,
    health,
    models,
    openai,
    operations,
    page,
    realtime,
    speakers,
    transcribe,
    webhook_secret,
)
from app.api.schemas import TaskStatusResponse
from app.caps import KeyCaps
from app.config import Settings
from app.keys import ApiKey, parse_api_keys
from app.live.capacity import LiveSessions
from app.live.engine import LiveEngineFactory, whisper_live_engine
from app.live.worker import LiveWorker
from app.ops.metrics import Metrics
from app.ops.preflight import log_preflight
from app.ops.telemetry import disable_telemetry
from app.outbound.webhooks import WebhookSender, owed_delivery
from app.pipeline.base import PipelineFactory
from app.pipeline.whisperx_pipeline import whisperx_pipeline
from app.private_files import private_directory
from app.storage import Storage, make_storage
from app.tasks.async_store import AsyncTaskStore, AsyncVoiceStore, StoreThreads
from app.tasks.backend import TaskBackend
from app.tasks.files import prepare_upload_dir, sweep_orphans
from app.tasks.manager import TaskManager
from app.tasks.models import TERMINAL, Task
from app.tasks.progress import StageCosts
from app.tasks.store import MemoryTaskStore, OwedCallback, TaskStore
from app.voices.enrollment import SampleEmbedder
from app.voices.store import MemoryVoiceStore, VoiceStore

logger = logging.getLogger("app")

# Forms hold one file and a few dozen short fields (the upload route has about twenty; prompts and
# URLs are at most a few kB): anything bigger is refused with 400 as it is parsed, instead of
# being held in memory (a megabyte a field and a thousand fields, by Starlette's defaults).
MAX_FORM_FIELDS = 64
MAX_FORM_FIELD_BYTES = 64 * 1024


def _api_keys(settings: Settings) -> list[ApiKey]:
    if settings.api_key_entries:
        return settings.api_key_entries
    # Never run open: with no key configured, make one and show it once, on the console only.
    key = secrets.token_urlsafe(24)
    print(f"API_KEYS is not set; this run accepts the generated key: {key}", file=sys.stderr, flush=True)
    return parse_api_keys(key)


def _store(settings: Settings, owed: OwedCallback) -> TaskStore:
    """The task store; the local ones write the callbacks a change owes (`owed`) with the change."""
    if settings.task_backend == "celery":
        from app.tasks.redis_store import RedisTaskStore

        return RedisTaskStore.from_url(settings.redis_url, settings.upload_dir)
    if settings.task_store == "sqlite":
        from app.tasks.sqlite_store import SqliteTaskStore

        if settings.task_db_path is None:  # the database is in DATA_DIR: private, as the uploads are
            private_directory(settings.data_dir, "DATA_DIR")
        return SqliteTaskStore(settings.task_db_file, settings.upload_dir, owed)
    return MemoryTaskStore(owed)


def _status_document(task: Task) -> bytes:
    """What a callback carries: the task's status document."""
    return TaskStatusResponse.from_task(task).model_dump_json().encode()


def _voice_store(settings: Settings) -> VoiceStore:
    """Voices live in the tasks' backend, with the same durability."""
    if settings.task_backend == "celery":
        from app.tasks.redis_store import redis_client
        from app.voices.store import RedisVoiceStore

        return RedisVoiceStore(redis_client(settings.redis_url))
    if settings.task_store == "sqlite":
        from app.voices.store import SqliteVoiceStore

        return SqliteVoiceStore(settings.task_db_file)
    return MemoryVoiceStore()


def _store_threads(settings: Settings) -> StoreThreads:
    """Redis answers many calls at once; SQLite one at a time; memory never blocks."""
    if settings.task_backend == "celery":
        # Enough for the requests of a busy API process at once; a stalled Redis holds these, not the loop.
        return StoreThreads(16, "redis")
    if settings.task_store == "sqlite":
        return StoreThreads(1, "sqlite")
    return StoreThreads(0, "memory")


def _backend(settings: Settings, store: AsyncTaskStore, factory: PipelineFactory, storage: Storage) -> TaskBackend:
    if settings.task_backend == "celery":
        from app.tasks.dispatcher import CeleryDispatcher

        return CeleryDispatcher(store, settings, storage=storage)
    return TaskManager(store, factory, settings)


async def _sweep_storage_forever(storage: Storage, has_task: Callable[[str], bool], grace: float) -> None:
    """The bucket's sweep, again and again: an API process killed mid-upload leaves an unfinished
    multipart upload (stored, and billed, until aborted) that no restart of its own need clean."""
    interval = min(max(grace / 4, 1.0), 3600.0)
    while True:
        try:
            await storage.sweep(has_task, grace)
        except Exception as error:  # noqa: BLE001 - the bucket away for a moment: next round
            logger.warning("Sweeping %s failed: %s", storage.description, error)
        await asyncio.sleep(interval)


def create_app(
    settings: Settings | None = None,
    pipeline_factory: PipelineFactory | None = None,
    live_factory: LiveEngineFactory | None = None,
) -> FastAPI:
    settings = settings or Settings()
    disable_telemetry()
    factory = pipeline_factory or whisperx_pipeline
    threads = _store_threads(settings)
    store = AsyncTaskStore(_store(settings, owed_delivery(settings, _status_document)), threads)
    metrics = Metrics(store)
    sample_embedder = SampleEmbedder(settings)
    live_worker = LiveWorker(live_factory or whisper_live_engine, settings)
    storage = make_storage(settings)

    def has_task(task_id: str) -> bool:
        """Whether an object of this name may still be needed: its task exists and has not ended
        (an ended task's object is one whose removal failed while the bucket was away)."""
        task = store.engine.get(task_id)
        return task is not None and task.status not in TERMINAL

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        prepare_upload_dir(settings.upload_dir)
        await storage.open()
        grace = settings.orphan_upload_grace_hours * 3600
        # A walk of the directory: on a thread whatever the store (the stores' calls are thread-safe).
        await asyncio.to_thread(
            sweep_orphans, settings.upload_dir, lambda task_id: store.engine.get(task_id) is not None, grace
        )
        sweeping: asyncio.Task[None] | None = None
        if settings.storage_url is not None:  # in the background: a bucket that is away must not stop the start
            sweeping = asyncio.create_task(_sweep_storage_forever(storage, has_task, grace), name="storage-sweep")
        if settings.task_backend == "local":  # with celery, the workers load the models and check them
            log_preflight(settings)
        manager = _backend(settings, store, factory, storage)
        manager.events.add_listener(metrics.task_changed)
        manager.events.add_listener(app.state.stage_costs.task_changed)
        webhooks = WebhookSender(settings, store, _status_document)
        if manager.callbacks is None:  # the local backend: callbacks follow the task events
            manager.events.add_listener(webhooks.task_changed)
        app.state.manager = manager
        await manager.start()
        if manager.callbacks is None:
            await webhooks.resume()
        else:  # Celery: the store queues them with the changes that owe them; the API processes share the queue
            webhooks.consume(manager.callbacks)
        try:
            yield
        finally:
            if sweeping is not None:
                sweeping.cancel()
            await manager.stop()
            await live_worker.stop()
            await webhooks.aclose()
            await storage.close()
            sample_embedder.close()
            threads.close()

    app = FastAPI(
        title="WhisperX Transcription API",
        description=description or "",
        version="1.0.0",
        lifespan=lifespan,
        # /docs and /redoc come from app.api.routes.docs, with their scripts served locally.
        docs_url=None,
        redoc_url=None,
        form_limits={"max_files": 1, "max_fields": MAX_FORM_FIELDS, "max_part_size": MAX_FORM_FIELD_BYTES},
    )
    app.state.settings = settings
    app.state.store = store
    app.state.storage = storage
    app.state.metrics = metrics
    app.state.stage_costs = StageCosts()  # measured stage costs, for the events' time estimates
    app.state.voices = AsyncVoiceStore(_voice_store(settings), threads)
    app.state.sample_embedder = sample_embedder
    app.state.key_ring = KeyRing(_api_keys(settings))
    app.state.live_worker = live_worker
    app.state.key_caps = key_caps = KeyCaps.from_settings(settings)
    app.state.live_sessions = LiveSessions(settings, key_caps.live)
    install_error_handlers(app)
    install_openapi(app)
    routers = [
        health.router, transcribe.router, speakers.router, events.router, openai.router, realtime.router,
        models.router, operations.router, webhook_secret.router, docs.router, page.router,
    ]  # fmt: skip
    for router in routers:
        app.include_router(router)
    # Before /static itself, which would otherwise take these paths.
    app.mount(docs.ASSETS_PREFIX, docs.asset_files, name="docs-assets")
    app.mount(page.STATIC_PREFIX, page.static_files, name="static")
    # Added last runs first: the key is checked, then the body's size, its pace, the key's caps and
    # the caller's admission, all before any route reads the body.
    upload_routes = RouteSet.named(routers, "upload", "create_transcription", "create_translation")
    app.add_middleware(UploadAdmissionMiddleware, upload_routes=upload_routes, uploads=key_caps.uploads)
    capped = [
        (RouteSet.named(routers, "task_events"), key_caps.streams),
        (RouteSet.named(routers, "enrol", "add_voice_sample"), key_caps.enrolments),
    ]
    app.add_middleware(KeyCapMiddleware, caps=capped)
    app.add_middleware(
        BodyPaceMiddleware, min_rate_kb=settings.body_min_rate_kb, grace_seconds=settings.body_grace_seconds
    )
    audio_routes = RouteSet.named(
        routers, "upload", "create_transcription", "create_translation", "enrol", "add_voice_sample"
    )
    app.add_middleware(
        BodyLimitMiddleware,
        upload_routes=audio_routes,
        max_upload_bytes=settings.max_upload_bytes,
        max_body_bytes=settings.max_body_bytes,
    )
    app.add_middleware(ApiKeyMiddleware, keys=app.state.key_ring)
    app.add_middleware(OpenAIErrorMiddleware)  # outermost: it sees the key check's refusals too
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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m app.main", description="Serve the API. Other settings come from the environment or .env."
    )
    parser.add_argument("--host", help="address to listen on (default: $HOST, or 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port to listen on (default: $PORT, or 8000)")
    args = parser.parse_args(argv)
    # Given values win over the environment, as keyword arguments do in pydantic-settings.
    settings = Settings(**{name: value for name, value in vars(args).items() if value is not None})
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
