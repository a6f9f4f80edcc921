"""Time estimates from measured stage costs, on task changes with a controlled clock."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from app.pipeline.base import Job, Stage
from app.tasks import progress
from app.tasks.models import Task, TaskStatus
from app.tasks.progress import ProgressTracker, StageCosts

STAGES = [Stage.DECODE, Stage.TRANSCRIBE, Stage.ALIGN, Stage.DIARIZE, Stage.ASSIGN]
# Seconds each stage takes on 60 s of audio in this made-up run.
SECONDS = {Stage.DECODE: 2.0, Stage.TRANSCRIBE: 30.0, Stage.ALIGN: 6.0, Stage.DIARIZE: 20.0, Stage.ASSIGN: 1.0}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    return clock


def _run(
    costs: StageCosts, clock: Clock, task_id: str, duration: float = 60.0, at: float = 0.5,
    slower: dict[Stage, float] | None = None,
) -> list[float | None]:  # fmt: skip
    """A task through every stage, each at its SECONDS scaled by the duration (and by `slower`, per
    stage); the estimate `at` that share of each stage."""
    task = Task(job=Job(task_id=task_id, audio_path=Path("/uploads") / task_id, duration=duration))
    task = replace(task, status=TaskStatus.PROCESSING)
    costs.task_changed(task, False)
    tracker = ProgressTracker(STAGES)
    estimates = []
    for stage in STAGES:
        seconds = SECONDS[stage] * duration / 60 * (slower or {}).get(stage, 1.0)
        task = replace(task, stage=stage, progress=tracker.update(stage, 0.0))
        costs.task_changed(task, False)
        clock.now += seconds * at
        task = replace(task, progress=tracker.update(stage, at))
        costs.task_changed(task, False)
        estimates.append(costs.eta_seconds(task))
        clock.now += seconds * (1 - at)
    costs.task_changed(replace(task, status=TaskStatus.COMPLETED, stage=None, progress=100.0), False)
    return estimates


def test_no_estimate_until_the_stages_were_measured_then_the_real_time_left(clock: Clock) -> None:
    costs = StageCosts()
    assert _run(costs, clock, "first") == [None] * len(STAGES)
    assert costs.per_audio_second[Stage.TRANSCRIBE] == pytest.approx(30.0 / 60)
    # A file twice as long: each estimate is what is left of it at that point.
    estimates = _run(costs, clock, "second", duration=120.0)
    expected = [
        2 * (SECONDS[stage] / 2 + sum(SECONDS[later] for later in STAGES[index + 1 :]))
        for index, stage in enumerate(STAGES)
    ]
    assert estimates == pytest.approx(expected, abs=0.1)


def test_failed_and_deleted_tasks_teach_nothing(clock: Clock) -> None:
    costs = StageCosts()
    task = Task(job=Job(task_id="a", audio_path=Path("/uploads/a"), duration=10.0), status=TaskStatus.PROCESSING)
    costs.task_changed(replace(task, stage=Stage.DECODE), False)
    clock.now += 50
    costs.task_changed(replace(task, status=TaskStatus.FAILED, stage=Stage.DECODE), False)
    costs.task_changed(replace(task, stage=Stage.DECODE, job=replace(task.job, task_id="b")), False)
    clock.now += 50
    costs.task_changed(replace(task, stage=Stage.DECODE, job=replace(task.job, task_id="b")), True)
    assert costs.per_audio_second == {}


def test_a_busier_machine_lengthens_the_estimate_of_the_stages_to_come(clock: Clock) -> None:
    """Every stage twice as slow as measured: the stages to come are scaled by the square root of the
    pace so far (a busier machine slows every stage, but a recording's content changes each stage
    differently), so the estimate moves towards the real time without trusting one stage's pace alone."""
    costs = StageCosts()
    _run(costs, clock, "first")
    estimates = _run(costs, clock, "second", at=0.0, slower=dict.fromkeys(STAGES, 2.0))
    measured = SECONDS[Stage.DIARIZE] + SECONDS[Stage.ASSIGN]
    assert estimates[STAGES.index(Stage.DIARIZE)] == pytest.approx(measured * 2**0.5, abs=0.1)


def test_a_stage_slower_than_measured_is_estimated_by_its_own_pace_as_it_goes(clock: Clock) -> None:
    """Only the diarizer is twice as slow (a recording with many voices): late in the stage its own
    progress rate decides its time left; the stage after it keeps its measured cost."""
    costs = StageCosts()
    _run(costs, clock, "first")
    halfway = _run(costs, clock, "second", slower={Stage.DIARIZE: 2.0})[STAGES.index(Stage.DIARIZE)]
    late = _run(costs, clock, "third", at=0.9, slower={Stage.DIARIZE: 2.0})[STAGES.index(Stage.DIARIZE)]
    diarize, assign = 2 * SECONDS[Stage.DIARIZE], SECONDS[Stage.ASSIGN]
    assert halfway is not None
    assert late is not None
    # Halfway: between what the measured cost says (11 s) and what the stage's own pace says (21 s).
    assert SECONDS[Stage.DIARIZE] / 2 + assign < halfway < diarize / 2 + assign
    assert late == pytest.approx(0.1 * diarize + assign, rel=0.05)


def _diarizing(clock: Clock) -> tuple[StageCosts, Task, ProgressTracker]:
    """Costs measured on one task; a second task, each earlier stage at its measured time, now starting
    to diarize."""
    costs = StageCosts()
    _run(costs, clock, "first")
    task = Task(job=Job(task_id="second", audio_path=Path("/uploads/second"), duration=60.0))
    task = replace(task, status=TaskStatus.PROCESSING)
    tracker = ProgressTracker(STAGES)
    for stage in STAGES[: STAGES.index(Stage.DIARIZE)]:
        task = replace(task, stage=stage, progress=tracker.update(stage, 0.0))
        costs.task_changed(task, False)
        clock.now += SECONDS[stage]
    task = replace(task, stage=Stage.DIARIZE, progress=tracker.update(Stage.DIARIZE, 0.0))
    costs.task_changed(task, False)
    return costs, task, tracker


def test_a_stage_that_reports_all_its_progress_early_still_counts_down(clock: Clock) -> None:
    """A diarizer reports 100 % before its last steps; a transcription batch lands at once: the
    estimate follows the stage's measured time, not only its progress."""
    costs, task, tracker = _diarizing(clock)
    task = replace(task, progress=tracker.update(Stage.DIARIZE, 1.0))  # all of it, at once
    costs.task_changed(task, False)
    clock.now += 5.0
    really_left = SECONDS[Stage.DIARIZE] - 5.0 + SECONDS[Stage.ASSIGN]
    # Within a tenth (the lead a stage's progress may have over its time), where progress alone said ~1 s.
    assert costs.eta_seconds(task) == pytest.approx(really_left, rel=0.1)


def test_the_last_second_of_a_stage_that_reported_all_its_progress_still_counts(clock: Clock) -> None:
    """The diarizer at 100 % while it embeds each speaker's voice: the half second left in it is
    counted, not read as done (the page said 0 s for the last second and a half of short files)."""
    costs, task, tracker = _diarizing(clock)
    clock.now += SECONDS[Stage.DIARIZE] - 0.5
    task = replace(task, progress=tracker.update(Stage.DIARIZE, 1.0))
    costs.task_changed(task, False)
    # Within a quarter second: the stage counts down to its predicted end, whatever progress it reported.
    assert costs.eta_seconds(task) == pytest.approx(0.5 + SECONDS[Stage.ASSIGN], abs=0.25)


def test_a_stage_past_its_predicted_time_with_no_progress_is_given_half_its_time_so_far(clock: Clock) -> None:
    """A transcription batch that takes longer than predicted reports nothing until it lands: the
    estimate neither reads 0 s nor jumps back to the whole prediction each time it is recomputed."""
    costs, task, _ = _diarizing(clock)
    clock.now += 2 * SECONDS[Stage.DIARIZE]
    assert costs.eta_seconds(task) == pytest.approx(SECONDS[Stage.DIARIZE] + SECONDS[Stage.ASSIGN], abs=0.1)
