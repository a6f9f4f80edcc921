"""Turns per-stage progress into one overall percentage that never goes backwards."""

from __future__ import annotations

from datetime import datetime

from app.pipeline.base import Stage

# Relative cost of each stage, from timing the embedded `base` model on CPU;
# only the stages a job runs count, so the total always reaches 100.
STAGE_WEIGHTS: dict[Stage, float] = {
    # A download's cost depends on the network, not the audio: a small, fixed share.
    Stage.DOWNLOAD: 5.0,
    Stage.DECODE: 3.0,
    Stage.TRANSCRIBE: 60.0,
    Stage.ALIGN: 12.0,
    Stage.DIARIZE: 22.0,
    Stage.ASSIGN: 3.0,
}

STAGE_MESSAGES: dict[Stage, str] = {
    Stage.DOWNLOAD: "Downloading audio",
    Stage.DECODE: "Decoding audio",
    Stage.TRANSCRIBE: "Transcribing speech",
    Stage.ALIGN: "Timing words",
    Stage.DIARIZE: "Identifying speakers",
    Stage.ASSIGN: "Assigning speakers to words",
}


class ProgressTracker:
    def __init__(self, stages: list[Stage]) -> None:
        total = sum(STAGE_WEIGHTS[stage] for stage in stages)
        self._start: dict[Stage, float] = {}
        self._span: dict[Stage, float] = {}
        done = 0.0
        for stage in stages:
            self._start[stage] = 100.0 * done / total
            self._span[stage] = 100.0 * STAGE_WEIGHTS[stage] / total
            done += STAGE_WEIGHTS[stage]
        self.percent = 0.0

    def update(self, stage: Stage, fraction: float) -> float:
        """Record progress within a stage; returns the overall percent, capped below 100 until done."""
        fraction = min(max(fraction, 0.0), 1.0)
        candidate = self._start[stage] + self._span[stage] * fraction
        # 100 is reserved for the completed status.
        self.percent = max(self.percent, min(candidate, 99.9))
        return self.percent


# Below this, elapsed time says little about the rest (models warming up, decoding).
ETA_MIN_PERCENT = 3.0


def eta_seconds(progress: float, started_at: datetime | None, now: datetime) -> float | None:
    """Seconds left, extrapolated from the time taken so far; None while it cannot be estimated.

    Stage weights are measured costs, so overall percent is close to linear in time.
    """
    if started_at is None or not ETA_MIN_PERCENT <= progress < 100.0:
        return None
    elapsed = (now - started_at).total_seconds()
    return round(elapsed * (100.0 - progress) / progress, 1)
