"""Prometheus metrics, kept by prometheus-client in a registry per app.

Counts of tasks by status and the queue depth are read from the store at scrape time; stage
durations, audio seconds and real-time factors are recorded as task events arrive.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.pipeline.base import Stage
from app.tasks.async_store import AsyncTaskStore
from app.tasks.models import TERMINAL, Task, TaskStatus

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Stages take from milliseconds (word timing by Whisper) to many minutes (long files on CPU).
_STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
# Processing time over audio time: below 1 is faster than real time.
_RTF_BUCKETS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 5)


class _StoreCollector(Collector):
    """The store's counts as of the last `exposition`, which reads them off the event loop first."""

    def __init__(self) -> None:
        self.counts: collections.Counter[TaskStatus] = collections.Counter()

    def collect(self) -> Iterator[Metric]:
        counts = self.counts
        tasks = GaugeMetricFamily("whisperx_tasks", "Tasks held by the service, by status", labels=["status"])
        for status in TaskStatus:
            tasks.add_metric([status.value], counts[status])
        yield tasks
        yield GaugeMetricFamily("whisperx_queue_depth", "Tasks waiting for a worker", value=counts[TaskStatus.PENDING])


class Metrics:
    def __init__(self, store: AsyncTaskStore) -> None:
        self._store = store
        self._counts = _StoreCollector()
        self.registry = CollectorRegistry()
        self.registry.register(self._counts)
        self._stage_seconds = Histogram(
            "whisperx_stage_duration_seconds", "Time spent in each pipeline stage", ["stage"],
            buckets=_STAGE_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self._audio_seconds = Counter(
            "whisperx_audio_processed_seconds", "Seconds of audio in completed tasks", registry=self.registry
        )
        self._real_time_factor = Histogram(
            "whisperx_real_time_factor", "Processing time divided by audio duration, per completed task",
            buckets=_RTF_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self._finished = Counter(
            "whisperx_tasks_finished", "Tasks that completed or failed", ["status"], registry=self.registry
        )
        self._current_stage: dict[str, tuple[Stage, float]] = {}

    def task_changed(self, task: Task, deleted: bool) -> None:
        ended = deleted or task.status in TERMINAL
        self._enter_stage(task.id, None if ended else task.stage)
        if ended and not deleted:
            self._task_finished(task)

    def _enter_stage(self, task_id: str, stage: Stage | None) -> None:
        """Time the stage a task leaves; start the clock on the one it enters (None: it left them all)."""
        previous = self._current_stage.get(task_id)
        if previous is not None and previous[0] == stage:
            return
        now = time.monotonic()
        if previous is not None:
            self._stage_seconds.labels(previous[0].value).observe(now - previous[1])
            del self._current_stage[task_id]
        if stage is not None:
            self._current_stage[task_id] = (stage, now)

    def _task_finished(self, task: Task) -> None:
        self._finished.labels(task.status.value).inc()
        duration = task.job.duration
        if task.status is TaskStatus.COMPLETED and duration and task.started_at and task.completed_at:
            self._audio_seconds.inc(duration)
            processing = (task.completed_at - task.started_at).total_seconds()
            self._real_time_factor.observe(processing / duration)

    async def exposition(self) -> bytes:
        self._counts.counts = await self._store.count_by_status()
        return generate_latest(self.registry)
