"""STORAGE_URL: uploads wait in an S3-compatible bucket, so the API and the workers share no folder.

Against a real S3 API: moto's server (`moto_server`), started here as a process of its own on
loopback, so the API's memory is measured apart from the bucket's. A real Celery worker process
running the named fake pipeline (tests/fakes.py) and the API use different local directories;
Redis is a real redis-server. Uploads, `audio_url` downloads, a delete while running and a worker
killed mid-task each leave the bucket empty once their task ends; a bucket that goes away
mid-upload answers 503 and leaves no unfinished upload behind; the API's memory stays bounded
while 200 MB stream through it.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.session
import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from app.keys import hashed_key_id as _hashed
from app.main import create_app
from tests.api.conftest import API_KEY, AUTH, AudioServer, make_settings, status, upload, wait_for_status, wait_until
from tests.conftest import ROOT, Deadline, free_port

BUCKET = "uploads-test"
PREFIX = "whisperx"
MIB = 1024 * 1024
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test-id",
    "AWS_SECRET_ACCESS_KEY": "test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class Bucket:
    endpoint: str
    client: Any

    def objects(self) -> list[str]:
        listed = self.client.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/")
        return [item["Key"] for item in listed.get("Contents", [])]

    def unfinished(self) -> list[str]:
        listed = self.client.list_multipart_uploads(Bucket=BUCKET, Prefix=f"{PREFIX}/")
        return [upload["Key"] for upload in listed.get("Uploads", [])]

    def empty(self) -> bool:
        return not self.objects() and not self.unfinished()


@contextlib.contextmanager
def _moto_server(**environment: str) -> Iterator[str]:
    """`moto_server` in a process of its own; its endpoint, once it answers."""
    port = free_port("MOTO_PORTS")
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **environment},
    )  # fmt: skip
    try:
        deadline = Deadline(30, "moto_server to answer")
        while True:
            assert server.poll() is None, "moto_server exited"
            try:
                httpx.get(f"http://127.0.0.1:{port}/moto-api/")
                break
            except httpx.TransportError as error:
                deadline.check(error)
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture(scope="module")
def bucket() -> Iterator[Bucket]:
    """moto's S3 server with an empty bucket; the credentials it accepts are set in this process's
    environment, where the API and the worker find them (the AWS chain)."""
    saved = {name: os.environ.get(name) for name in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    try:
        with _moto_server() as endpoint:
            client = botocore.session.get_session().create_client("s3", endpoint_url=endpoint)
            client.create_bucket(Bucket=BUCKET)
            yield Bucket(endpoint, client)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _database(redis_url: str, number: int) -> str:
    url = re.sub(r"/\d+$", f"/{number}", redis_url)
    redis.Redis.from_url(url).flushdb()
    return url


def _storage_settings(endpoint: str) -> dict[str, Any]:
    return {"task_backend": "celery", "storage_url": f"s3://{BUCKET}/{PREFIX}", "s3_endpoint_url": endpoint}


@dataclass
class Cluster:
    api: TestClient
    api_dir: Path
    worker_dir: Path
    redis: redis.Redis
    worker: subprocess.Popen[bytes]


# A Celery worker as `python -m app.tasks.celery_worker` starts it, on the named fake pipeline.
FAKE_WORKER = (
    "import app.tasks.celery_worker as worker\n"
    "from tests.fakes import FakePipeline\n"
    "worker.whisperx_pipeline = FakePipeline\n"
    "worker.main()\n"
)


@pytest.fixture(scope="module")
def cluster(bucket: Bucket, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("object-storage")
    url = _database(redis_url, 5)
    api_dir, worker_dir = workdir / "api-uploads", workdir / "worker-uploads"
    environment = {
        **os.environ, "TASK_BACKEND": "celery", "REDIS_URL": url, "UPLOAD_DIR": str(worker_dir),
        "STORAGE_URL": f"s3://{BUCKET}/{PREFIX}", "S3_ENDPOINT_URL": bucket.endpoint, "MAX_CONCURRENT_TASKS": "1",
        "MODEL_CACHE_DIR": str(workdir / "cache"), "FAKE_STEP_SECONDS": "0.1", "LOG_LEVEL": "warning",
    }  # fmt: skip
    log = (workdir / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-c", FAKE_WORKER], cwd=ROOT, env=environment, stdout=log, stderr=log, start_new_session=True
    )
    settings = make_settings(
        workdir, upload_dir=api_dir, redis_url=url, audio_url_allow_private=True, **_storage_settings(bucket.endpoint)
    )
    try:
        with TestClient(create_app(settings)) as api:
            client = redis.Redis.from_url(url, decode_responses=True)
            wait_until(lambda: api.get("/ready", headers=AUTH).status_code == 200, timeout=60)
            yield Cluster(api, api_dir, worker_dir, client, worker)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
        log.close()


def _files(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir()) if directory.is_dir() else []


def _all_gone(cluster: Cluster, bucket: Bucket) -> bool:
    """Nothing left of any task: no object, no unfinished upload, no file on either side."""
    return bucket.empty() and not _files(cluster.api_dir) and not _files(cluster.worker_dir)


def test_uploads_and_audio_url_run_on_a_worker_that_shares_no_folder(
    cluster: Cluster, bucket: Bucket, short_speech: Path, audio_server: AudioServer
) -> None:
    task_id = upload(cluster.api, short_speech)["task_id"]
    assert _files(cluster.api_dir) == [], "the API's copy was a scratch file: the bucket holds the upload"
    done = wait_for_status(cluster.api, task_id, {"completed", "failed"}, timeout=60)
    assert done["status"] == "completed", done
    wait_until(lambda: _all_gone(cluster, bucket))

    form = {"audio_url": audio_server.url("/speech.wav")}
    response = cluster.api.post("/api/v1/transcribe/upload", headers=AUTH, data=form)
    assert response.status_code == 202, response.text
    done = wait_for_status(cluster.api, response.json()["task_id"], {"completed", "failed"}, timeout=60)
    assert done["status"] == "completed", done
    wait_until(lambda: _all_gone(cluster, bucket))


def test_a_task_deleted_while_running_takes_its_object_with_it(
    cluster: Cluster, bucket: Bucket, short_speech: Path
) -> None:
    task_id = upload(cluster.api, short_speech)["task_id"]
    wait_until(lambda: status(cluster.api, task_id)["status"] == "processing", timeout=60)
    assert bucket.objects() == [f"{PREFIX}/uploads/{_hashed(API_KEY)}/{task_id}"], "a running task keeps its object"
    assert cluster.api.delete(f"/api/v1/transcribe/task/{task_id}", headers=AUTH).status_code == 200
    wait_until(lambda: _all_gone(cluster, bucket))


def test_a_worker_killed_mid_task_leaves_the_object_for_the_retry(
    cluster: Cluster, bucket: Bucket, short_speech: Path
) -> None:
    task_id = upload(cluster.api, short_speech)["task_id"]

    def running_pid() -> int | None:
        holder = cluster.redis.get(f"whisperx:lease:{task_id}")
        processing = status(cluster.api, task_id)["status"] == "processing"
        return int(holder.partition(":")[2].partition("/")[0]) if holder and processing else None

    pid = wait_until(running_pid, timeout=60)
    os.kill(pid, signal.SIGKILL)  # the pool process, mid-task: Celery redelivers its message
    assert len(bucket.objects()) == 1, "the killed worker's task keeps its object"
    done = wait_for_status(cluster.api, task_id, {"completed", "failed"}, timeout=90)
    assert done["status"] == "completed", done
    wait_until(lambda: _all_gone(cluster, bucket))


def test_a_refused_upload_leaves_nothing_in_the_bucket(
    bucket: Bucket, redis_url: str, tmp_path: Path, short_speech: Path
) -> None:
    """Refused once its body has arrived (not audio), after two parts had gone into the bucket:
    the multipart upload is aborted before the answer."""
    settings = make_settings(tmp_path, redis_url=_database(redis_url, 6), **_storage_settings(bucket.endpoint))
    with TestClient(create_app(settings)) as api:
        not_audio = b"not audio " * (2 * MIB)  # 20 MiB: two parts sent, the rest waiting in memory
        refused = api.post("/api/v1/transcribe/upload", headers=AUTH, files={"file": ("a.wav", not_audio)})
        assert refused.status_code == 415, refused.text
        assert bucket.empty(), (bucket.objects(), bucket.unfinished())
        assert _files(settings.upload_dir) == []


class Outage:
    """A loopback TCP relay to the bucket that can be cut: the storage stopping, as the API sees it."""

    def __init__(self, target_port: int, cut_after_bytes: int) -> None:
        self.port = free_port("MOTO_PORTS")
        self.cut_after = cut_after_bytes
        self.relayed = 0
        self.down = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._target = target_port
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.down.is_set():
                client.close()
                continue
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        with client, socket.create_connection(("127.0.0.1", self._target)) as upstream:
            while not self.down.is_set():
                readable, _, _ = select.select([client, upstream], [], [], 0.1)
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    (upstream if source is client else client).sendall(data)
                    if source is client:
                        self.relayed += len(data)
                        if self.relayed > self.cut_after:
                            self.down.set()  # every connection closes; new ones are refused

    def restore(self) -> None:
        self.relayed, self.cut_after = 0, sys.maxsize
        self.down.clear()

    def close(self) -> None:
        self._listener.close()


def _wav_header(data_bytes: int) -> bytes:
    """A 16 kHz mono 16-bit WAV header for `data_bytes` of samples."""
    return (
        b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16) + b"data" + struct.pack("<I", data_bytes)
    )  # fmt: skip


def test_storage_stopped_mid_upload_answers_503_and_leaves_no_unfinished_upload(
    bucket: Bucket, redis_url: str, tmp_path: Path
) -> None:
    port = int(bucket.endpoint.rpartition(":")[2])
    outage = Outage(port, cut_after_bytes=12 * MIB)  # after the first part, during the second
    # The sweep aborts unfinished uploads older than the grace (here 1.8 s), every second.
    settings = make_settings(
        tmp_path, redis_url=_database(redis_url, 7), orphan_upload_grace_hours=0.0005,
        **_storage_settings(f"http://127.0.0.1:{outage.port}"),
    )  # fmt: skip
    audio = _wav_header(40 * MIB) + b"\0" * (40 * MIB)
    # What a crash leaves (an object no task refers to), and something of another application's.
    orphan, foreign = f"{PREFIX}/uploads/someone/{uuid.uuid4()}", f"{PREFIX}/elsewhere/{uuid.uuid4()}"
    for key in (orphan, foreign):
        bucket.client.put_object(Bucket=BUCKET, Key=key, Body=b"left")
    try:
        with TestClient(create_app(settings)) as api:
            refused = api.post("/api/v1/transcribe/upload", headers=AUTH, files={"file": ("long.wav", audio)})
            assert refused.status_code == 503, refused.text
            assert f"s3://{BUCKET}/{PREFIX}/" in refused.json()["detail"], "the answer names the storage"
            assert _files(settings.upload_dir) == []
            ready = api.get("/ready", headers=AUTH)
            assert ready.status_code == 503, ready.text
            assert f"s3://{BUCKET}/{PREFIX}/" in ready.json()["detail"]
            # The abort could not reach the bucket either: the multipart upload is left, as by a killed API.
            assert len(bucket.unfinished()) == 1
            outage.restore()
            wait_until(lambda: not bucket.unfinished(), timeout=30)  # the sweep aborted it
            wait_until(lambda: bucket.objects() == [foreign], timeout=30)  # the orphan removed, not the rest
    finally:
        outage.close()
        bucket.client.delete_object(Bucket=BUCKET, Key=foreign)


def test_a_worker_that_cannot_reach_the_bucket_fails_the_task_with_the_reason(
    bucket: Bucket, redis_url: str, tmp_path: Path, short_speech: Path
) -> None:
    url = _database(redis_url, 8)  # a queue of its own: the module's worker does not take this task
    settings = make_settings(tmp_path, redis_url=url, **_storage_settings(bucket.endpoint))
    with TestClient(create_app(settings)) as api:
        task_id = upload(api, short_speech)["task_id"]
        closed = free_port("MOTO_PORTS")  # nothing listens there
        worker = (
            "import sys\n"
            "from app.config import Settings\n"
            "from app.tasks.remote import RemoteRunner\n"
            "from tests.fakes import FakePipeline\n"
            "RemoteRunner(Settings(), FakePipeline).run(sys.argv[1])\n"
        )
        environment = {
            **os.environ, "TASK_BACKEND": "celery", "REDIS_URL": url, "UPLOAD_DIR": str(tmp_path / "worker"),
            "STORAGE_URL": f"s3://{BUCKET}/{PREFIX}", "S3_ENDPOINT_URL": f"http://127.0.0.1:{closed}",
            "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        }  # fmt: skip
        subprocess.run([sys.executable, "-c", worker, task_id], cwd=ROOT, env=environment, check=True, timeout=120)
        done = status(api, task_id)
        assert done["status"] == "failed", done
        assert f"The upload storage (s3://{BUCKET}/{PREFIX}/ at http://127.0.0.1:{closed})" in done["error"]
        assert "EndpointConnectionError" in done["error"]
        assert _files(tmp_path / "worker") == []
        # Failed is an end: the object goes with it once the API's next try reaches the bucket.
        api.delete(f"/api/v1/transcribe/task/{task_id}", headers=AUTH)
        wait_until(bucket.empty)


def test_refused_credentials_answer_503_naming_the_storage(
    bucket: Bucket, redis_url: str, tmp_path: Path, short_speech: Path
) -> None:
    """A bucket that checks credentials (moto with its IAM checks on) and knows none of ours."""
    with _moto_server(INITIAL_NO_AUTH_ACTION_COUNT="0") as endpoint:
        settings = make_settings(tmp_path, redis_url=_database(redis_url, 10), **_storage_settings(endpoint))
        with TestClient(create_app(settings)) as api:
            with short_speech.open("rb") as audio:
                refused = api.post("/api/v1/transcribe/upload", headers=AUTH, files={"file": ("a.wav", audio)})
            assert refused.status_code == 503, refused.text
            detail = refused.json()["detail"]
            assert f"The upload storage (s3://{BUCKET}/{PREFIX}/ at {endpoint})" in detail
            assert "InvalidAccessKeyId" in detail
            assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in detail
            ready = api.get("/ready", headers=AUTH)
            assert ready.status_code == 503, ready.text
            assert f"s3://{BUCKET}/{PREFIX}/" in ready.json()["detail"]
            assert api.get("/api/v1/transcribe/tasks", headers=AUTH).json()["total"] == 0
            # Enrolment samples go through the bucket too (under samples/), while they are embedded.
            with short_speech.open("rb") as audio:
                sample = api.post(
                    "/api/v1/speakers", headers=AUTH, data={"name": "Alice"}, files={"file": ("a.wav", audio)}
                )
            assert sample.status_code == 503, sample.text
            assert "InvalidAccessKeyId" in sample.json()["detail"]
            assert _files(settings.upload_dir) == []


def _peak_rss_kib(pid: int) -> int:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmHWM"].split()[0])


def test_the_api_memory_stays_bounded_while_200_mb_stream_into_the_bucket(
    bucket: Bucket, redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    environment = {
        **os.environ, "API_KEYS": API_KEY, "UPLOAD_DIR": str(tmp_path / "uploads"), "DATA_DIR": str(tmp_path / "data"),
        "TASK_BACKEND": "celery", "REDIS_URL": _database(redis_url, 9), "STORAGE_URL": f"s3://{BUCKET}/{PREFIX}",
        "S3_ENDPOINT_URL": bucket.endpoint, "LOG_LEVEL": "warning",
    }  # fmt: skip
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
    api = subprocess.Popen(command, cwd=ROOT, env=environment)
    base = f"http://127.0.0.1:{port}"
    try:

        def answers() -> bool:
            assert api.poll() is None, "the API exited"
            with contextlib.suppress(httpx.TransportError):
                return httpx.get(f"{base}/live", headers=AUTH).status_code == 200
            return False

        wait_until(answers, timeout=60)
        before = _peak_rss_kib(api.pid)
        size = 200 * MIB

        def body() -> Iterator[bytes]:
            yield b"--b\r\nContent-Disposition: form-data; name=file; filename=long.wav\r\n\r\n"
            yield _wav_header(size)
            chunk = b"\0" * MIB
            for _ in range(size // MIB):
                yield chunk
            yield b"\r\n--b--\r\n"

        response = httpx.post(
            f"{base}/api/v1/transcribe/upload", content=body(), timeout=300,
            headers={**AUTH, "content-type": "multipart/form-data; boundary=b"},
        )  # fmt: skip
        assert response.status_code == 202, response.text
        grown = (_peak_rss_kib(api.pid) - before) / 1024
        task_id = response.json()["task_id"]
        stored = bucket.client.head_object(Bucket=BUCKET, Key=f"{PREFIX}/uploads/{_hashed(API_KEY)}/{task_id}")
        assert stored["ContentLength"] == size + 44
        # Parts of 8 MiB: two in flight (each also in its socket's send buffer), one filling and its copy,
        # and what the first upload imports: tens of MiB (about 60 measured here), not the 200 MiB upload
        # (held whole, it grew by 406 MiB).
        print(f"API peak memory grew by {grown:.0f} MiB while 200 MiB streamed into the bucket")
        assert grown < 120, f"the API's peak memory grew by {grown:.0f} MiB during a 200 MiB upload"
    finally:
        api.terminate()
        api.wait(20)
        for key in bucket.objects():
            bucket.client.delete_object(Bucket=BUCKET, Key=key)
