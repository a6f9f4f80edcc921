"""GET /live and GET /ready for orchestrators, GET /metrics for Prometheus."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.api.deps import CallerDep, ManagerDep, MetricsDep, StorageDep
from app.api.errors import UNAUTHORIZED
from app.api.schemas import LiveResponse, ReadyResponse
from app.ops.metrics import CONTENT_TYPE
from app.storage import StorageUnavailable

router = APIRouter(tags=["operations"], responses=UNAUTHORIZED)


@router.get("/live", response_model=LiveResponse, summary="Whether the API process answers at all")
async def live(_caller: CallerDep) -> LiveResponse:
    # Reads nothing (no store, no workers): it answers whenever the event loop does, so a store or a
    # worker that is away makes /ready or /health fail, never this; a liveness probe restarts only a hung process.
    return LiveResponse(alive=True)


@router.get(
    "/ready",
    response_model=ReadyResponse,
    responses={
        503: {"model": ReadyResponse, "description": "The models are not loaded (yet), or the upload storage is away"}
    },
    summary="Whether the workers have their models loaded and the upload storage answers",
)
async def ready(_caller: CallerDep, manager: ManagerDep, storage: StorageDep, response: Response) -> ReadyResponse:
    """The workers: every worker of this process (TASK_BACKEND=local); at least one live worker with
    TASK_BACKEND=celery, where the API cannot know how many there should be."""
    state = manager.worker_state()
    try:
        await storage.check()
        unreachable = None
    except (StorageUnavailable, TimeoutError) as error:
        unreachable = str(error) or f"The upload storage ({storage.description}) did not answer in time."
    if unreachable is not None:
        detail = unreachable
    elif state.load_error:
        detail = f"The models could not be loaded: {state.load_error}"
    elif not state.loaded:
        detail = "The models are loading"
    else:
        detail = "Ready"
    ready = state.loaded and not state.load_error and unreachable is None
    response.status_code = 200 if ready else 503
    info = state.info
    return ReadyResponse(
        ready=ready,
        detail=detail,
        model=info.model if info else None,
        device=info.device if info else None,
        diarizer=info.diarizer if info else None,
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text exposition format"}},
    summary="Prometheus metrics",
)
async def metrics(_caller: CallerDep, metrics: MetricsDep) -> Response:
    return Response(await metrics.exposition(), media_type=CONTENT_TYPE)
