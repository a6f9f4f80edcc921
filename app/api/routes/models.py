"""GET /v1/models: the Whisper models a request may choose, in OpenAI's list shape."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import CallerDep, ManagerDep, SettingsDep
from app.api.errors import UNAUTHORIZED
from app.api.schemas import OpenAIModel, OpenAIModelList
from app.pipeline.models import allowed_whisper_models

router = APIRouter(prefix="/v1", tags=["openai-compatible"], responses=UNAUTHORIZED)


@router.get("/models", response_model=OpenAIModelList, summary="Models a request may choose, OpenAI-compatible")
async def list_models(_caller: CallerDep, manager: ManagerDep, settings: SettingsDep) -> OpenAIModelList:
    loaded = {name for names in manager.worker_state().loaded_models.values() for name in names}
    return OpenAIModelList(
        data=[
            OpenAIModel(id=name, owned_by="whisperx-api", loaded=name in loaded)
            for name in allowed_whisper_models(settings)
        ]
    )
