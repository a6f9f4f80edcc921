"""How many live sessions may be open: MAX_LIVE_SESSIONS in all (the live worker's capacity) and
MAX_LIVE_SESSIONS_PER_KEY for each key, counted in this API process. Checked at the upgrade, so a
refused client gets an HTTP answer, not a WebSocket that closes at once."""

from __future__ import annotations

from collections import Counter

from app.config import Settings


class SessionRefused(Exception):
    """The upgrade is refused; `status` and the message are what the client is told."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class LiveSessions:
    def __init__(self, settings: Settings) -> None:
        self._total = settings.max_live_sessions
        self._per_key = settings.max_live_sessions_per_key
        self._open: Counter[str] = Counter()

    def open(self, owner: str) -> None:
        """Count a session for the owner, or raise SessionRefused; every open needs one `close`."""
        if self._open[owner] >= self._per_key:
            raise SessionRefused(
                429, f"This key already has {self._per_key} live session(s) open (MAX_LIVE_SESSIONS_PER_KEY); "
                "close one first",
            )  # fmt: skip
        if sum(self._open.values()) >= self._total:
            raise SessionRefused(
                503, f"The server has {self._total} live sessions open, its limit (MAX_LIVE_SESSIONS); retry later"
            )
        self._open[owner] += 1

    def close(self, owner: str) -> None:
        self._open[owner] -= 1
        if self._open[owner] <= 0:
            del self._open[owner]
