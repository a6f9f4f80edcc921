"""Per-key caps on what one API key may hold open at once, so one key cannot crowd out the rest.

One family of settings (MAX_*_PER_KEY) names each cap; this module counts against them. A cap is a
counter per key: `acquire` takes a place or raises `CapReached`, which the caller answers with 429,
and `release` gives the place back. Event streams count against the streams cap; so will live
sessions, which are the same kind of long-held connection. Counts are per API process (several
processes behind a balancer each allow the cap).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from app.config import Settings

RETRY_AFTER_SECONDS = 5
"""Streams and enrolments end within seconds to minutes; sooner only adds load."""


class CapReached(Exception):
    """A key holds as many of something as it may; `detail` is what the client is told (429)."""

    status = 429

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class KeyCap:
    """At most `limit` of one kind of thing held by each key at once; `refusal` says so to a key at the cap."""

    def __init__(self, limit: int, refusal: str) -> None:
        self.limit = limit
        self.refusal = refusal
        self._held: Counter[str] = Counter()

    def acquire(self, owner: str) -> None:
        """Take a place for the owner, or raise CapReached; every acquire needs one `release`."""
        if self._held[owner] >= self.limit:
            raise CapReached(self.refusal)
        self._held[owner] += 1

    def release(self, owner: str) -> None:
        self._held[owner] -= 1
        if self._held[owner] <= 0:
            del self._held[owner]


@dataclass(frozen=True)
class KeyCaps:
    """The caps of one API process, counted in memory."""

    streams: KeyCap
    """Long-held connections: event streams (and live sessions)."""
    enrolments: KeyCap
    """Voice enrolments in flight, from the first byte of the sample to its embedding."""
    uploads: KeyCap
    """Audio uploads whose body is still arriving."""

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyCaps:
        return cls(
            streams=KeyCap(
                settings.max_streams_per_key,
                "This key already has as many event streams open as this server allows "
                f"({settings.max_streams_per_key}, MAX_STREAMS_PER_KEY); close one (a stream also ends after "
                "its task's last event), or poll the task's status instead.",
            ),
            enrolments=KeyCap(
                settings.max_enrolments_per_key,
                "This key already has as many enrolments in flight as this server allows "
                f"({settings.max_enrolments_per_key}, MAX_ENROLMENTS_PER_KEY); wait for one to be answered, "
                "then send this one.",
            ),
            uploads=KeyCap(
                settings.max_uploads_per_key,
                "This key is already sending as many uploads at once as this server allows "
                f"({settings.max_uploads_per_key}, MAX_UPLOADS_PER_KEY); wait for one to finish, then send this one.",
            ),
        )
