"""TASK_BACKEND=celery: a worker writes only while the task is its own (its lease) and in the state it
expects. A worker whose lease lapsed while the API's sweep requeued its task writes nothing over that,
and leaves the upload for the retry (the Celery task runner on a real Redis, with the fake pipeline);
a requeue whose message cannot be sent is tried again; a worker busy loading a model still announces itself."""

from __future__ import annotations

import os
import re
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from app.main import create_app
from app.pipeline.base import Job, PipelineInfo, Stage
from app.tasks import remote
from app.tasks.coordination import Coordination
from app.tasks.lifecycle import requeued
from app.tasks.models import Task, TaskStatus
from app.tasks.remote import RemoteRunner
from tests.api.conftest import make_settings, upload
from tests.conftest import Deadline
from tests.fakes import FakePipeline


def test_a_worker_whose_lease_lapsed_leaves_the_task_and_its_upload_to_the_retry(
    redis_url: str, tmp_path: Path, short_speech: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = re.sub(r"/\d+$", "/6", redis_url)
    redis.Redis.from_url(url).flushdb()
    monkeypatch.setattr(os, "nice", lambda _increment: 0)  # the runner lowers its own priority: not this test's
    gates = tmp_path / "gates"
    gates.mkdir()
    monkeypatch.setenv("FAKE_GATE_DIR", str(gates))
    settings = make_settings(tmp_path, task_backend="celery", redis_url=url)
    runner = RemoteRunner(settings, FakePipeline)
    store = runner.store
    settings.upload_dir.mkdir(parents=True, exist_ok=True)
    upload = settings.upload_dir / "c0ffee00-0000-4000-8000-000000000001"
    shutil.copy(short_speech, upload)
    job = Job(task_id=upload.name, audio_path=upload, file_name="lapse.wav")
    store.add(Task(job=job))

    running = threading.Thread(target=runner.run, args=(job.task_id,))
    running.start()
    deadline = Deadline(30, "the task to reach transcription")
    while (task := store.get(job.task_id)) is None or task.stage is not Stage.TRANSCRIBE:
        deadline.check(task)
    # The lease lapses (the worker stalled, or lost Redis for longer than LEASE_SECONDS) and the sweep
    # requeues the task, as the API's sweep writes it.
    lease = Coordination(store.client).lease_key(job.task_id)
    store.client.delete(lease)
    retry = requeued("Its worker stopped unexpectedly; waiting to be retried on another worker")
    assert store.update_if(job.task_id, TaskStatus.PROCESSING, (lease, None), **retry) is not None
    (gates / "lapse.wav").touch()  # the stalled worker carries on
    running.join(30)
    assert not running.is_alive()

    task = store.get(job.task_id)
    assert task is not None
    assert (task.status, task.message) == (TaskStatus.PENDING, retry["message"]), "the sweep's write stands"
    assert upload.exists(), "the retry's upload is left in place"


def test_a_requeue_whose_message_cannot_be_sent_is_tried_again(
    redis_url: str, tmp_path: Path, short_speech: Path
) -> None:
    """The sweep requeues a task whose worker died; when its message cannot be sent, the task is not left
    pending with nothing to run it: the next sweep tries again."""
    url = re.sub(r"/\d+$", "/6", redis_url)
    redis.Redis.from_url(url).flushdb()
    app = create_app(make_settings(tmp_path, task_backend="celery", redis_url=url), FakePipeline)
    with TestClient(app) as client:
        task_id = upload(client, short_speech)["task_id"]
        dispatcher = client.app.state.manager  # type: ignore[attr-defined]
        store = client.app.state.store.engine  # type: ignore[attr-defined]
        store.update(task_id, status=TaskStatus.PROCESSING)  # its worker died: no lease
        sent: list[str] = []

        def broker_away(_task_id: str) -> None:
            raise ConnectionError("the broker is away")

        dispatcher._send = broker_away
        dispatcher._sweep()
        assert store.get(task_id).status is TaskStatus.PROCESSING, "left for the next sweep, not pending for good"
        dispatcher._send = sent.append
        dispatcher._sweep()
        assert store.get(task_id).status is TaskStatus.PENDING
        assert sent == [task_id]


class _DownloadingPipeline(FakePipeline):
    """A pipeline whose model manager is busy (a model downloading for a request) once `busy` is set."""

    busy = threading.Event()
    done = threading.Event()

    def info(self) -> PipelineInfo:
        if self.busy.is_set():
            self.done.wait(30)
        return super().info()


def test_a_worker_goes_on_announcing_itself_while_a_model_downloads(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = re.sub(r"/\d+$", "/6", redis_url)
    redis.Redis.from_url(url).flushdb()
    monkeypatch.setattr(os, "nice", lambda _increment: 0)
    monkeypatch.setattr(remote, "RENEW_SECONDS", 0.05)
    announced = threading.Semaphore(0)
    announce = Coordination.announce

    def counted(self: Coordination, worker: str, state: dict[str, Any]) -> None:
        announce(self, worker, state)
        announced.release()

    monkeypatch.setattr(Coordination, "announce", counted)
    RemoteRunner(make_settings(tmp_path, task_backend="celery", redis_url=url), _DownloadingPipeline)
    try:
        assert announced.acquire(timeout=10)
        _DownloadingPipeline.busy.set()
        for _ in range(5):  # many rounds of announcements while the pipeline cannot answer
            assert announced.acquire(timeout=10), "the worker stopped announcing itself"
    finally:
        _DownloadingPipeline.done.set()
