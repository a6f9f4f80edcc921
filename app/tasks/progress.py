"""Turns per-stage progress into one overall percentage that never goes backwards."""

from __future__ import annotations

import time

from app.pipeline.base import Stage
from app.tasks.models import TERMINAL, Task, TaskStatus

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
    """Maps each stage's own fraction onto one overall percent, by the stages' weights."""

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

    def fraction_of(self, stage: Stage, percent: float) -> float:
        """How far into `stage` an overall percent is (0-1)."""
        return min(max((percent - self._start[stage]) / self._span[stage], 0.0), 1.0)


class StageCosts:
    """Seconds each stage takes per second of audio, measured on the tasks this server runs, and
    the time a task has left by them.

    Fixed weights are right for one machine and model at best (early estimates ran at twice the
    real time); measured costs follow the hardware, model and options in use. Until every stage
    a task still has to run has been measured, there is no estimate: none is better than a wrong one.
    A task-event listener (`TaskEvents.add_listener`): it times each stage from the first progress
    report in it to the first in the next one.
    """

    SMOOTHING = 0.5
    """Weight of the newest measurement in the running average: recent tasks count most."""

    def __init__(self) -> None:
        self.per_audio_second: dict[Stage, float] = {}
        self._running: dict[str, tuple[Stage, float]] = {}  # task id -> stage, monotonic start

    def task_changed(self, task: Task, deleted: bool) -> None:
        now = time.monotonic()
        running = self._running.get(task.id)
        stage = None if deleted or task.status in TERMINAL else task.stage
        if running is not None and running[0] != stage:
            del self._running[task.id]
            if task.status is not TaskStatus.FAILED and not deleted:
                self._measured(running[0], now - running[1], task.job.duration)
        if stage is not None and (running is None or running[0] != stage):
            self._running[task.id] = (stage, now)

    def _measured(self, stage: Stage, seconds: float, duration: float | None) -> None:
        if not duration:
            return
        cost = seconds / duration
        previous = self.per_audio_second.get(stage)
        self.per_audio_second[stage] = cost if previous is None else previous + self.SMOOTHING * (cost - previous)

    def eta_seconds(self, task: Task) -> float | None:
        """Seconds until the task completes; None when it is not running or the costs are not known yet."""
        duration = task.job.duration
        if task.stage is None or task.status in TERMINAL or not duration:
            return None
        stages = task.job.progress_stages
        if task.stage not in stages:
            return None
        ahead = stages[stages.index(task.stage) :]
        if any(stage not in self.per_audio_second for stage in ahead):
            return None
        done_in_stage = ProgressTracker(stages).fraction_of(task.stage, task.progress)
        seconds = sum(self.per_audio_second[stage] * duration for stage in ahead[1:])
        seconds += self.per_audio_second[task.stage] * duration * (1.0 - done_in_stage)
        return round(seconds, 1)
