"""GET /health: is the service up, on what device, with which model, how busy."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

from fastapi import APIRouter

from app.api.deps import CallerDep, ManagerDep, SettingsDep, StoreDep
from app.api.errors import UNAUTHORIZED
from app.api.schemas import GpuMemory, HealthResponse, ModelsHealth, QueueCounts
from app.pipeline.models import allowed_whisper_models
from app.tasks.models import TaskStatus

router = APIRouter(tags=["health"], responses=UNAUTHORIZED)


async def _gpu_memory() -> list[GpuMemory] | None:
    """Live GPU memory from nvidia-smi: the API process itself never loads torch or CUDA."""
    if shutil.which("nvidia-smi") is None:
        return None
    query = ["nvidia-smi", "--query-gpu=name,memory.total,memory.used", "--format=csv,noheader,nounits"]
    completed = await asyncio.to_thread(subprocess.run, query, capture_output=True, text=True, timeout=5, check=False)
    if completed.returncode != 0:
        return None
    gpus = []
    for line in completed.stdout.strip().splitlines():
        name, total, used = (part.strip() for part in line.split(","))
        gpus.append(GpuMemory(name=name, memory_total_mb=int(total), memory_used_mb=int(used)))
    return gpus


@router.get("/health", response_model=HealthResponse, summary="Service status, model and queue")
async def health(_caller: CallerDep, manager: ManagerDep, store: StoreDep, settings: SettingsDep) -> HealthResponse:
    state = manager.worker_state()
    allowed = allowed_whisper_models(settings)
    counts = await store.count_by_status()
    status = "degraded" if state.load_error else "ok" if state.loaded else "loading"
    device = state.info.device if state.info else None
    return HealthResponse(
        status=status,
        device=device,
        model=state.info.model if state.info else None,
        diarizer=state.info.diarizer if state.info else None,
        model_loaded=state.loaded,
        model_error=state.load_error,
        queue=QueueCounts(pending=counts[TaskStatus.PENDING], processing=counts[TaskStatus.PROCESSING]),
        models=ModelsHealth(default=allowed[0], allowed=allowed, loaded=state.loaded_models, errors=state.model_errors),
        gpu=await _gpu_memory() if device == "cuda" else None,
        max_upload_mb=settings.max_upload_mb,
    )
