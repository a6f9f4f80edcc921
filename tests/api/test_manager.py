"""Concurrency cap, arrival order, delete in every state, and worker failures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.pipeline.base import Job, Stage
from app.tasks.worker_process import JobCancelled, WorkerProcess
from tests.api.conftest import AUTH, status, upload, wait_for_status, wait_until
from tests.conftest import Deadline
from tests.fakes import FakePipeline


def _health_queue(client: TestClient) -> dict[str, int]:
    queue: dict[str, int] = client.get("/health", headers=AUTH).json()["queue"]
    return queue


def test_concurrency_cap_and_arrival_order(make_client: Callable[..., TestClient], short_speech: Path) -> None:
    client = make_client({"FAKE_STEP_SECONDS": "0.02"}, max_concurrent_tasks=2)
    ids = [upload(client, short_speech)["task_id"] for _ in range(5)]
    most_processing = 0
    deadline = Deadline(60, "all five tasks to complete")
    while True:
        # One snapshot of the store: reading five statuses one by one is not atomic.
        processing = _health_queue(client)["processing"]
        assert processing <= 2
        most_processing = max(most_processing, processing)
        docs = [status(client, task_id) for task_id in ids]
        if all(doc["status"] == "completed" for doc in docs):
            break
        deadline.check([doc["status"] for doc in docs])
    assert most_processing == 2
    started = [datetime.fromisoformat(doc["started_at"]) for doc in docs]
    assert started == sorted(started), "pending tasks start in arrival order"
    assert _health_queue(client) == {"pending": 0, "processing": 0}


def test_health_reports_model_device_and_queue(make_client: Callable[..., TestClient], short_speech: Path) -> None:
    client = make_client({"FAKE_STEP_SECONDS": "0.2"})
    wait_until(lambda: client.get("/health", headers=AUTH).json()["model_loaded"])
    first = upload(client, short_speech)["task_id"]
    upload(client, short_speech)
    wait_for_status(client, first, {"processing"})
    health = client.get("/health", headers=AUTH).json()
    assert health == {
        "status": "ok",
        "device": "cpu",
        "model": "fake",
        "diarizer": None,
        "model_loaded": True,
        "model_error": None,
        "queue": {"pending": 1, "processing": 1},
        "models": {"default": "base", "allowed": ["base"], "loaded": {"worker-0": ["fake"]}, "errors": {}},
        "gpu": None,
        "max_upload_mb": 500.0,
    }


def test_delete_pending_task(make_client: Callable[..., TestClient], short_speech: Path) -> None:
    client = make_client({"FAKE_STEP_SECONDS": "0.1"})
    running = upload(client, short_speech)["task_id"]
    pending = upload(client, short_speech)["task_id"]
    assert status(client, pending)["status"] == "pending"
    response = client.delete(f"/api/v1/transcribe/task/{pending}", headers=AUTH)
    assert response.status_code == 200
    assert response.json()["task_id"] == pending
    assert client.get(f"/api/v1/transcribe/status/{pending}", headers=AUTH).status_code == 404
    settings = client.app.state.settings  # type: ignore[attr-defined]
    assert not (settings.upload_dir / pending).exists()
    wait_for_status(client, running, {"completed"})


def test_delete_running_task_stops_it_and_frees_its_file(
    make_client: Callable[..., TestClient], short_speech: Path
) -> None:
    client = make_client({"FAKE_STEP_SECONDS": "0.2"})
    settings = client.app.state.settings  # type: ignore[attr-defined]
    doomed = upload(client, short_speech)["task_id"]
    wait_for_status(client, doomed, {"processing"})
    assert (settings.upload_dir / doomed).exists()
    assert client.delete(f"/api/v1/transcribe/task/{doomed}", headers=AUTH).status_code == 200
    assert client.get(f"/api/v1/transcribe/status/{doomed}", headers=AUTH).status_code == 404
    assert not (settings.upload_dir / doomed).exists()
    # The worker stops at its next progress step and takes the next task.
    wait_until(lambda: _health_queue(client)["processing"] == 0, timeout=2)
    after = upload(client, short_speech)["task_id"]
    assert wait_for_status(client, after, {"completed"})["result"] is not None


def test_a_stop_asked_before_the_job_reaches_the_worker_is_kept(settings: Settings, short_speech: Path) -> None:
    """A delete that lands while the task is being started (its start written, its job not yet sent)
    stops the job at its first progress step, rather than being forgotten and ending in a kill."""

    async def scenario() -> None:
        worker = WorkerProcess("worker-stop", FakePipeline, settings)
        await worker.start()
        try:
            worker.take_next()  # the slot takes the task
            worker.cancel()  # the delete
            with pytest.raises(JobCancelled):
                await worker.run(Job(task_id="doomed", audio_path=short_speech), _ignore_progress)
        finally:
            await worker.stop()

    asyncio.run(scenario())


async def _ignore_progress(stage: Stage, fraction: float, text: str | None) -> None:
    pass


def test_task_that_ignores_cancel_is_killed_and_the_worker_replaced(
    make_client: Callable[..., TestClient], short_speech: Path
) -> None:
    client = make_client({"FAKE_MODE": "stubborn"}, cancel_grace_seconds=0.5)
    manager = client.app.state.manager  # type: ignore[attr-defined]
    worker = manager._workers[0]
    first_pid = worker._process.pid
    stuck = upload(client, short_speech)["task_id"]
    wait_for_status(client, stuck, {"processing"})
    assert client.delete(f"/api/v1/transcribe/task/{stuck}", headers=AUTH).status_code == 200
    wait_until(lambda: worker._process is not None and worker._process.pid != first_pid, timeout=10)
    wait_until(lambda: client.get("/health", headers=AUTH).json()["model_loaded"], timeout=10)


@pytest.mark.parametrize("standby_workers", [0, 1])
def test_worker_crash_fails_only_that_task(
    make_client: Callable[..., TestClient], short_speech: Path, tmp_path: Path, standby_workers: int
) -> None:
    """Two workers: the one running a task dies; that task fails with the reason, the task running on
    the other worker meanwhile completes, and the tasks after it run as usual."""
    crashing = tmp_path / "crash.wav"
    crashing.write_bytes(short_speech.read_bytes())
    # Steps slow enough that the other task is still running when the worker dies (checked below).
    fake = {"FAKE_CRASH_NAME": crashing.name, "FAKE_STEP_SECONDS": "0.1"}
    client = make_client(fake, standby_workers=standby_workers, max_concurrent_tasks=2)
    survivor = upload(client, short_speech)["task_id"]
    wait_for_status(client, survivor, {"processing"})
    crashed = upload(client, crashing)["task_id"]
    failed = wait_for_status(client, crashed, {"failed"})
    assert "worker process stopped unexpectedly" in failed["error"]
    assert status(client, survivor)["status"] == "processing", "the other task ran while the worker died"
    assert wait_for_status(client, survivor, {"completed", "failed"})["status"] == "completed"
    following = [upload(client, short_speech)["task_id"] for _ in range(2)]
    for task_id in following:
        assert wait_for_status(client, task_id, {"completed", "failed"})["status"] == "completed"
    assert client.get("/ready", headers=AUTH).status_code == 200


def test_finished_tasks_leave_no_upload_behind(client: TestClient, short_speech: Path) -> None:
    ids = [upload(client, short_speech)["task_id"] for _ in range(3)]
    for task_id in ids:
        wait_for_status(client, task_id, {"completed"})
    settings = client.app.state.settings  # type: ignore[attr-defined]
    wait_until(lambda: list(settings.upload_dir.iterdir()) == [], timeout=2)


def test_shutdown_removes_uploads_still_waiting(make_client: Callable[..., TestClient], short_speech: Path) -> None:
    client = make_client({"FAKE_STEP_SECONDS": "0.5"})
    settings = client.app.state.settings  # type: ignore[attr-defined]
    for _ in range(3):
        upload(client, short_speech)
    assert len(list(settings.upload_dir.iterdir())) == 3
    client.__exit__(None, None, None)
    assert list(settings.upload_dir.iterdir()) == []


def test_workers_run_at_lower_priority_than_the_api(client: TestClient) -> None:
    import os

    from app.tasks.worker_process import WORKER_NICENESS

    worker = client.app.state.manager._workers[0]  # type: ignore[attr-defined]
    api_priority = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, worker._process.pid) == min(api_priority + WORKER_NICENESS, 19)


@pytest.mark.parametrize(
    ("fake_env", "killed"),
    [
        ({"FAKE_STEP_SECONDS": "0.2"}, False),  # stops at its next progress step: the same process runs on
        ({"FAKE_MODE": "stubborn"}, True),  # ignores the request: killed after CANCEL_GRACE_SECONDS, replaced
    ],
    ids=["cooperative", "unresponsive"],
)
def test_cancel_frees_the_worker_for_the_next_task(
    make_client: Callable[..., TestClient], short_speech: Path, fake_env: dict[str, str], killed: bool
) -> None:
    """After DELETE the slot runs the next task: a job that reports progress stops there and its worker
    carries on; one that ignores the request is killed and the worker replaced. (bench/cancel.py
    measures how long each takes.)"""
    client = make_client(fake_env)
    worker = client.app.state.manager._workers[0]  # type: ignore[attr-defined]
    doomed = upload(client, short_speech)["task_id"]
    following = upload(client, short_speech)["task_id"]
    wait_for_status(client, doomed, {"processing"})
    pid = worker._process.pid
    assert client.delete(f"/api/v1/transcribe/task/{doomed}", headers=AUTH).status_code == 200
    wait_for_status(client, following, {"processing"}, timeout=30)
    assert (worker._process.pid != pid) is killed
    assert _alive(pid) is not killed


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


@pytest.fixture
def stuck_speech(short_speech: Path, tmp_path: Path) -> Path:
    """Speech under the name FAKE_STUCK_NAME gives: the fake pipeline hangs on it without reporting."""
    stuck = tmp_path / "stuck.wav"
    stuck.write_bytes(short_speech.read_bytes())
    return stuck


def test_a_killed_worker_is_replaced_by_a_loaded_standby(
    make_client: Callable[..., TestClient], short_speech: Path, stuck_speech: Path
) -> None:
    """A deleted task stuck in a step that never reports is killed after the grace, and the next
    queued task runs at once on the standby, which had loaded before the delete."""
    client = make_client({"FAKE_STUCK_NAME": stuck_speech.name}, standby_workers=1, cancel_grace_seconds=0.5)
    manager = client.app.state.manager  # type: ignore[attr-defined]
    settings = client.app.state.settings  # type: ignore[attr-defined]
    wait_until(lambda: manager._standby._loading and manager._standby._loading[0].done())
    killed_pid, standby_pid = manager._workers[0]._process.pid, manager._standby._workers[0]._process.pid

    stuck = upload(client, stuck_speech)["task_id"]
    following = upload(client, short_speech)["task_id"]
    wait_until(lambda: status(client, stuck)["message"] == "Transcribing speech")
    deleted = time.monotonic()
    assert client.delete(f"/api/v1/transcribe/task/{stuck}", headers=AUTH).status_code == 200
    # Working, not only started: the pipeline has reported a step of the following task.
    wait_until(lambda: status(client, following)["message"] not in ("Waiting in the queue", "Starting"), timeout=10)
    latency = time.monotonic() - deleted
    print(f"DELETE to the next task's first step: {latency:.2f} s (grace 0.5 s)")
    assert latency < 3.0  # a fresh worker would need its start-up on top of the grace

    assert manager._workers[0]._process.pid == standby_pid
    assert not _alive(killed_pid)
    assert not (settings.upload_dir / stuck).exists()
    assert wait_for_status(client, following, {"completed"})["result"] is not None
    health = client.get("/health", headers=AUTH).json()
    assert health["model_loaded"]
    assert health["models"]["loaded"] == {"worker-0": ["fake"]}
    # A new standby loads in the background, ready for the next kill.
    wait_until(lambda: manager._standby._loading and manager._standby._loading[0].done())
    replacement_pid = manager._standby._workers[0]._process.pid
    assert replacement_pid not in (killed_pid, standby_pid)

    client.__exit__(None, None, None)
    assert not any(_alive(pid) for pid in (standby_pid, replacement_pid))


def test_without_standby_a_killed_worker_is_restarted_in_place(
    make_client: Callable[..., TestClient], short_speech: Path, stuck_speech: Path
) -> None:
    client = make_client({"FAKE_STUCK_NAME": stuck_speech.name}, standby_workers=0, cancel_grace_seconds=0.5)
    manager = client.app.state.manager  # type: ignore[attr-defined]
    worker = manager._workers[0]
    killed_pid = worker._process.pid
    stuck = upload(client, stuck_speech)["task_id"]
    following = upload(client, short_speech)["task_id"]
    wait_until(lambda: status(client, stuck)["message"] == "Transcribing speech")
    assert client.delete(f"/api/v1/transcribe/task/{stuck}", headers=AUTH).status_code == 200
    assert wait_for_status(client, following, {"completed"})["result"] is not None
    assert manager._workers[0] is worker
    assert worker._process.pid != killed_pid
    assert not _alive(killed_pid)


def test_shutdown_stops_a_standby_still_loading(make_client: Callable[..., TestClient]) -> None:
    client = make_client(standby_workers=1)
    manager = client.app.state.manager  # type: ignore[attr-defined]
    wait_until(lambda: manager._standby._workers and manager._standby._workers[0]._process is not None)
    standby = manager._standby._workers[0]._process
    assert not manager._standby._loading[0].done()  # it has only just been spawned
    stopping = time.monotonic()
    client.__exit__(None, None, None)
    assert not standby.is_alive()
    print(f"shutdown with a standby loading: {time.monotonic() - stopping:.2f} s")


def test_a_standby_that_died_while_idle_gives_way_to_a_restart(
    make_client: Callable[..., TestClient], short_speech: Path, stuck_speech: Path
) -> None:
    client = make_client({"FAKE_STUCK_NAME": stuck_speech.name}, standby_workers=1, cancel_grace_seconds=0.5)
    manager = client.app.state.manager  # type: ignore[attr-defined]
    wait_until(lambda: manager._standby._loading and manager._standby._loading[0].done())
    standby = manager._standby._workers[0]
    standby.kill()  # as the out-of-memory killer would, while it waits
    standby._process.join(5)

    stuck = upload(client, stuck_speech)["task_id"]
    following = upload(client, short_speech)["task_id"]
    wait_until(lambda: status(client, stuck)["message"] == "Transcribing speech")
    assert client.delete(f"/api/v1/transcribe/task/{stuck}", headers=AUTH).status_code == 200
    assert wait_for_status(client, following, {"completed"})["result"] is not None
    assert manager._workers[0] is not standby, "the dead standby was not given the slot"
    assert manager._workers[0].alive()


def test_unset_standby_workers_keeps_one_for_workers_on_the_cpu(make_client: Callable[..., TestClient]) -> None:
    client = make_client(standby_workers=None)  # the fake pipeline reports device "cpu"
    manager = client.app.state.manager  # type: ignore[attr-defined]
    wait_until(lambda: manager._standby._loading and manager._standby._loading[0].done())
    assert len(manager._standby._workers) == 1
    assert manager._standby._workers[0].alive()
