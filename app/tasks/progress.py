"""Turns per-stage progress into one overall percentage that never goes backwards."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

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
    Two corrections follow the task itself (measured on real recordings: bench/eta.py):
    - the running stage's own pace: once it has reported a tenth of its progress, its time left
      leans on the time its progress so far has taken, the more the further it is;
    - the pace of the task's finished stages, carried to the stages to come at half its weight
      (its square root): a busier machine slows every stage alike, but what a recording holds
      (dense speech, many voices) changes each stage's time differently.
    A task-event listener (`TaskEvents.add_listener`): it times each stage from the first progress
    report in it to the first in the next one.
    """

    SMOOTHING = 0.5
    """Weight of the newest measurement in the running average: recent tasks count most."""
    OWN_PACE_AFTER = 0.1
    """Share of a stage's progress before its own pace counts: earlier, one report's timing is noise."""
    PACE_AFTER = 0.1
    """Share of a task's predicted work its finished stages must make before their pace counts."""
    OVERRUN = 0.5
    """A stage past its predicted time that has reported no progress is taken to need this share of
    the time it has run so far (a long transcription batch): the estimate neither reads 0 s nor jumps
    back to the whole prediction."""

    def __init__(self) -> None:
        self.per_audio_second: dict[Stage, float] = {}
        self._running: dict[str, tuple[Stage, float]] = {}  # task id -> stage, monotonic start
        self._runs: dict[str, _Run] = {}

    def task_changed(self, task: Task, deleted: bool) -> None:
        now = time.monotonic()
        running = self._running.get(task.id)
        stage = None if deleted or task.status in TERMINAL else task.stage
        if running is not None and running[0] != stage:
            del self._running[task.id]
            if task.status is not TaskStatus.FAILED and not deleted:
                self._measured(running[0], now - running[1], task.job.duration)
        if stage is None:  # ended, or queued after its download: the next run starts its own clock
            self._runs.pop(task.id, None)
        elif running is None or running[0] != stage:
            self._running[task.id] = (stage, now)
            self._runs.setdefault(task.id, _Run(stage, now, dict(self.per_audio_second)))

    def _measured(self, stage: Stage, seconds: float, duration: float | None) -> None:
        if not duration:
            return
        cost = seconds / duration
        previous = self.per_audio_second.get(stage)
        self.per_audio_second[stage] = cost if previous is None else previous + self.SMOOTHING * (cost - previous)

    def eta_seconds(self, task: Task) -> float | None:
        """Seconds until the task completes; None when it is not running or the costs are not known yet."""
        duration = task.job.duration
        stages = task.job.progress_stages
        if task.stage not in stages or task.status in TERMINAL or not duration:
            return None
        current = stages.index(task.stage)
        run = self._runs.get(task.id)
        # The costs as they were when this run began: its own finished stages do not move the scale.
        cost = run.costs if run is not None else self.per_audio_second
        if any(stage not in cost for stage in stages[current:]):
            return None
        now = time.monotonic()
        running = self._running.get(task.id)
        in_stage_seconds = now - running[1] if running is not None and running[0] == task.stage else 0.0
        scale = math.sqrt(self._pace(task, run, cost, running))
        predicted = duration * cost[task.stage] * scale
        # By the prediction: its time less the time run, or its share not yet reported, whichever is
        # longer (a stage can report all its progress before its last step, or be slower than predicted).
        # The event stream recomputes this each second a stage reports nothing.
        in_stage = ProgressTracker(stages).fraction_of(task.stage, task.progress)
        by_progress = predicted * (1.0 - in_stage) if in_stage > 0 else self.OVERRUN * in_stage_seconds
        stage_left = max(predicted - in_stage_seconds, by_progress)
        if self.OWN_PACE_AFTER <= in_stage < 1.0 and in_stage_seconds > 0:
            own_pace_left = in_stage_seconds * (1.0 - in_stage) / in_stage
            stage_left += in_stage * (own_pace_left - stage_left)
        later = duration * sum(cost[stage] for stage in stages[current + 1 :]) * scale
        return round(later + stage_left, 1)

    def _pace(
        self, task: Task, run: _Run | None, cost: dict[Stage, float], running: tuple[Stage, float] | None
    ) -> float:
        """How this run's finished stages went against their predicted time (2: twice as long); 1 until
        they make PACE_AFTER of its predicted work."""
        stages = task.job.progress_stages
        if run is None or running is None or run.first not in stages or running[1] <= run.started:
            return 1.0
        ahead = stages[stages.index(run.first) :]
        finished = ahead[: ahead.index(running[0])] if running[0] in ahead else []
        if any(stage not in cost for stage in ahead):
            return 1.0
        before = sum(cost[stage] for stage in finished)
        if before <= 0 or before < self.PACE_AFTER * sum(cost[stage] for stage in ahead):
            return 1.0
        return (running[1] - run.started) / (before * (task.job.duration or 1.0))


@dataclass(frozen=True)
class _Run:
    """One run of a task through its stages, as StageCosts times it."""

    first: Stage
    started: float
    costs: dict[Stage, float]
