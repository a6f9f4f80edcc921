"""How many live sessions may be open: MAX_LIVE_SESSIONS in all (the live worker's capacity), and
MAX_LIVE_SESSIONS_PER_KEY for each key (the per-key caps' `live`, app/caps.py), counted in this
API process. Checked at the upgrade, so a refused client gets an HTTP answer, not a WebSocket that
closes at once."""

from __future__ import annotations

from app.caps import CapReached, KeyCap
from app.config import Settings


class SessionRefused(Exception):
    """The upgrade is refused; `status` and the message are what the client is told."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class LiveSessions:
    def __init__(self, settings: Settings, per_key: KeyCap) -> None:
        self._total = settings.max_live_sessions
        self._per_key = per_key
        self._open = 0

    def open(self, owner: str) -> None:
        """Count a session for the owner, or raise SessionRefused; every open needs one `close`."""
        try:
            self._per_key.acquire(owner)
        except CapReached as reached:
            raise SessionRefused(reached.status, reached.detail) from None
        if self._open >= self._total:
            self._per_key.release(owner)
            raise SessionRefused(
                503, f"The server has {self._total} live sessions open, its limit (MAX_LIVE_SESSIONS); retry later"
            )
        self._open += 1

    def close(self, owner: str) -> None:
        self._open -= 1
        self._per_key.release(owner)
