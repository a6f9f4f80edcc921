"""TASK_BACKEND=celery on the real model: a real redis-server, two `python -m app.tasks.celery_worker`
processes and the API under uvicorn with two processes of its own, all separate processes.

Two workers share a queue; a worker process killed with SIGKILL mid-task does not lose its
task (retried once, then failed with a reason); the API restarted mid-task still reports
it; DELETE stops a running task; another key sees nothing.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import ROOT, ffmpeg, free_port
from tests.real.conftest import KNOWN_TEXT, normalise, word_error_rate

KEY, OTHER_KEY = "distributed-key", "other-key"
AUTH, OTHER_AUTH = {"X-API-Key": KEY}, {"X-API-Key": OTHER_KEY}


def _wait(condition: Callable[[], Any], what: str, timeout: float = 300) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Cluster:
    workdir: Path
    env: dict[str, str]
    redis: redis.Redis
    url: str = ""
    api: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("ab")
        # A session of its own: SIGKILL to the group takes a worker with its pool processes.
        return subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=log, start_new_session=True)

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def start_worker(self) -> subprocess.Popen[bytes]:
        before = len(self.redis.keys("whisperx:worker:*"))
        self.workers.append(
            self._spawn(f"worker-{len(self.workers)}", [sys.executable, "-m", "app.tasks.celery_worker"])
        )
        _wait(lambda: len(self.redis.keys("whisperx:worker:*")) > before, "the worker to load its model")
        return self.workers[-1]

    def start_api(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
        self.api = self._spawn("api", [*command, "--workers", "2"])

        def ready() -> bool:
            assert self.api is not None
            assert self.api.poll() is None, self.log("api")[-3000:]
            with contextlib.suppress(httpx.TransportError):
                return httpx.get(f"{self.url}/ready", headers=AUTH).status_code == 200
            return False

        _wait(ready, "the API to see a ready worker")

    def kill_api(self) -> None:
        assert self.api is not None
        os.killpg(self.api.pid, signal.SIGKILL)
        self.api.wait(30)

    def submit(self, path: Path, **form: Any) -> str:
        with path.open("rb") as audio:
            response = httpx.post(
                f"{self.url}/api/v1/transcribe/upload", headers=AUTH, files={"file": (path.name, audio)}, data=form
            )
        assert response.status_code == 202, response.text
        task_id: str = response.json()["task_id"]
        return task_id

    def status(self, task_id: str, auth: dict[str, str] = AUTH) -> httpx.Response:
        return httpx.get(f"{self.url}/api/v1/transcribe/status/{task_id}", headers=auth)

    def wait_done(self, task_id: str) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            body: dict[str, Any] = self.status(task_id).json()
            return body if body["status"] in ("completed", "failed") else None

        result: dict[str, Any] = _wait(done, f"task {task_id} to finish")
        return result

    def wait_running(self, task_id: str, not_in: int | None = None) -> int:
        """Waits until the task is transcribing in a process other than `not_in`; returns its pid."""

        def running() -> int | None:
            holder = self.redis.get(f"whisperx:lease:{task_id}")
            pid = int(holder.partition(":")[2].partition("/")[0]) if holder else None
            transcribing = "Transcribing" in self.status(task_id).json()["message"]
            return pid if transcribing and pid not in (None, not_in) else None

        pid: int = _wait(running, f"task {task_id} to be transcribing")
        return pid

    def text(self, task_id: str) -> str:
        response = httpx.get(f"{self.url}/api/v1/transcribe/result/{task_id}", headers=AUTH)
        assert response.status_code == 200, response.text
        return " ".join(segment["text"] for segment in response.json()["segments"])

    def stop(self) -> None:
        for process in [*self.workers, *([self.api] if self.api else [])]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in [*self.workers, *([self.api] if self.api else [])]:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("distributed")
    url = re.sub(r"/\d+$", "/1", redis_url)  # a database of its own: the store tests use /0
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    env = {
        **os.environ,
        "TASK_BACKEND": "celery",
        "REDIS_URL": url,
        "API_KEYS": f"{KEY},{OTHER_KEY}",
        # Shared by the API and the workers, as a network volume would be across machines.
        "UPLOAD_DIR": str(workdir / "uploads"),
        "WHISPER_MODEL": "tiny.en",
        "MAX_CONCURRENT_TASKS": "1",
        "BATCH_SIZE": "1",
        "CANCEL_GRACE_SECONDS": "5",
    }
    cluster = Cluster(workdir, env, client)
    try:
        cluster.start_worker()
        cluster.start_worker()
        cluster.start_api()
        yield cluster
    finally:
        cluster.stop()
        sys.stderr.write(f"\n--- api log tail ---\n{cluster.log('api')[-2000:]}\n")


@pytest.fixture(scope="module")
def clip(known_speech: Path, media_dir: Path) -> Path:
    """About 45 s of speech: the known clip three times over, long enough to interrupt."""
    target = media_dir / "distributed.wav"
    if not target.exists():
        ffmpeg("-stream_loop", "2", "-i", str(known_speech), "-c", "copy", str(target))
    return target


def test_two_workers_share_a_queue_and_keys_stay_apart(cluster: Cluster, known_speech: Path) -> None:
    task_ids = [cluster.submit(known_speech, language="en", enable_diarization="false") for _ in range(4)]
    for task_id in task_ids:
        body = cluster.wait_done(task_id)
        assert body["status"] == "completed", body
        assert word_error_rate(KNOWN_TEXT, cluster.text(task_id)) < 0.25
        assert cluster.status(task_id, OTHER_AUTH).status_code == 404

    def ran_by() -> list[set[str]] | None:
        # Celery logs a task's success just after the task has written its result.
        logs = [cluster.log(f"worker-{n}") for n in (0, 1)]
        ran = [{task_id for task_id in task_ids if f"transcribe[{task_id}] succeeded" in log} for log in logs]
        return ran if ran[0] | ran[1] == set(task_ids) else None

    ran = _wait(ran_by, "the workers to log every task", 30)
    assert ran[0], f"each worker should have taken tasks: {ran}"
    assert ran[1], f"each worker should have taken tasks: {ran}"
    listed = httpx.get(f"{cluster.url}/api/v1/transcribe/tasks", headers=OTHER_AUTH).json()
    assert listed["total"] == 0
    assert not list((cluster.workdir / "uploads").iterdir()), "uploads are removed when their tasks end"


def test_a_worker_killed_mid_task_does_not_lose_the_task(cluster: Cluster, clip: Path) -> None:
    task_id = cluster.submit(clip, language="en")
    pid = cluster.wait_running(task_id)
    os.kill(pid, signal.SIGKILL)
    body = cluster.wait_done(task_id)
    assert body["status"] == "completed", body
    assert cluster.redis.get(f"whisperx:starts:{task_id}") == "2"
    assert word_error_rate(" ".join([KNOWN_TEXT] * 3), cluster.text(task_id)) < 0.25


def test_a_task_whose_worker_dies_twice_fails_with_the_reason(cluster: Cluster, clip: Path) -> None:
    task_id = cluster.submit(clip, language="en")
    first = cluster.wait_running(task_id)
    os.kill(first, signal.SIGKILL)
    # The retry runs in another process (Celery replaces the killed one, or the other worker takes it).
    second = cluster.wait_running(task_id, not_in=first)
    os.kill(second, signal.SIGKILL)
    body = cluster.wait_done(task_id)
    assert body["status"] == "failed", body
    assert "stopped unexpectedly twice" in body["error"]
    assert not list((cluster.workdir / "uploads").iterdir())


def test_the_api_restarted_mid_task_still_reports_it(cluster: Cluster, clip: Path) -> None:
    task_id = cluster.submit(clip, language="en")
    cluster.wait_running(task_id)
    cluster.kill_api()
    cluster.start_api()
    assert cluster.status(task_id).json()["status"] in ("processing", "completed")
    body = cluster.wait_done(task_id)
    assert body["status"] == "completed", body
    assert normalise(cluster.text(task_id))


def test_delete_stops_a_running_task(cluster: Cluster, clip: Path, known_speech: Path) -> None:
    task_id = cluster.submit(clip, language="en")
    pid = cluster.wait_running(task_id)
    response = httpx.delete(f"{cluster.url}/api/v1/transcribe/task/{task_id}", headers=AUTH)
    assert response.status_code == 200, response.text
    assert cluster.status(task_id).status_code == 404
    _wait(lambda: not cluster.redis.exists(f"whisperx:lease:{task_id}"), "the worker to let the task go", 60)
    os.kill(pid, 0)  # it stopped at a progress step: the process lives on with its models
    assert not list((cluster.workdir / "uploads").iterdir())
    follow_up = cluster.submit(known_speech, language="en", enable_diarization="false")
    assert cluster.wait_done(follow_up)["status"] == "completed"


def test_a_worker_killed_whole_has_its_task_retried_on_another(cluster: Cluster, clip: Path) -> None:
    """The worker's main process and its pool go together, as when a machine dies: the task's
    lease lapses, the API's sweep requeues it, and the surviving worker runs it."""
    task_id = cluster.submit(clip, language="en")
    pid = cluster.wait_running(task_id)
    victim = next(p for p in cluster.workers if p.poll() is None and _is_child(pid, p.pid))
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(30)
    body = cluster.wait_done(task_id)
    assert body["status"] == "completed", body
    assert cluster.redis.get(f"whisperx:starts:{task_id}") == "2"


def _is_child(pid: int, parent: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1] == str(parent)
