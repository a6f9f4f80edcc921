"""GET /api/v1/webhook-secret: the secret that signs the calling key's callbacks, for that key alone."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from app.api.deps import CallerDep, SettingsDep
from app.api.errors import UNAUTHORIZED, problem_response
from app.api.schemas import WebhookSecretResponse
from app.outbound.webhooks import key_secret

router = APIRouter(tags=["webhooks"], responses=UNAUTHORIZED)


@router.get(
    "/api/v1/webhook-secret",
    response_model=WebhookSecretResponse,
    responses={404: problem_response("The server has no WEBHOOK_SECRET, so it sends no callbacks")},
    summary="The secret to verify this key's callbacks with",
)
async def webhook_secret(caller: CallerDep, settings: SettingsDep) -> WebhookSecretResponse:
    """Callbacks of this key's tasks are signed with this secret, which no other key can read:
    verify them with it (for example `standardwebhooks.Webhook(secret).verify(body, headers)`)."""
    if settings.webhook_secret is None:
        raise HTTPException(
            404, "This server has no WEBHOOK_SECRET, so it sends no callbacks and has no secret to give; "
            "ask its operator to set one, or poll the status or follow the events stream instead"
        )  # fmt: skip
    return WebhookSecretResponse(key_id=caller, secret=key_secret(settings.webhook_secret, caller))
