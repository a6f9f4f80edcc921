"""The commands the compose files run in their containers, run here as a new user's `.env` sets them up.

No Docker engine runs these tests: each compose file is resolved by `docker-compose config` with
`.env.example` copied to `.env` (what the deployment docs say to do), and every command that can
run outside a container (the image's entry command, the services' commands and their health checks)
runs with the environment the container would get. Only what only a container has is replaced:
the Dockerfile's paths (/data, /cache) by temporary folders, the listening address by a loopback
port, the Redis host by the tests' redis-server, MinIO by moto's S3 server, and `python` by this
interpreter.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import botocore.session
import httpx
import pytest
import yaml

from tests.api.test_object_storage import CREDENTIALS, _moto_server
from tests.conftest import ROOT, Deadline, free_port

SERVICE = "whisperx-api"


def _services(compose_file: str, folder: Path) -> dict[str, Any]:
    """The compose file's services as docker-compose resolves them after `cp .env.example .env`."""
    docker_compose = shutil.which("docker-compose")
    if docker_compose is None:
        pytest.fail("docker-compose is not installed (apt-get install docker-compose)")
    folder.mkdir(exist_ok=True)
    shutil.copy(ROOT / compose_file, folder / compose_file)
    shutil.copy(ROOT / ".env.example", folder / ".env")
    resolved = subprocess.run(
        [docker_compose, "-f", compose_file, "config"], cwd=folder, capture_output=True, text=True, check=True
    )
    services: dict[str, Any] = yaml.safe_load(resolved.stdout)["services"]
    return services


def _image_command() -> list[str]:
    """The Dockerfile's CMD: what a service without a command of its own runs."""
    match = re.search(r"^CMD (\[.*\])$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert match, "the Dockerfile has no CMD in exec form"
    command: list[str] = json.loads(match.group(1))
    return command


def _here(command: list[str]) -> list[str]:
    """A container command as this machine runs it: `python` and `uvicorn` from this interpreter."""
    if command[0] == "python":
        return [sys.executable, *command[1:]]
    if command[0] == "uvicorn":
        return [sys.executable, "-m", "uvicorn", *command[1:]]
    return command


def _listen_on(command: list[str], port: int) -> list[str]:
    """The command with its --host and --port, if it names them, moved to this machine's loopback port."""
    moved = list(command)
    for option, value in (("--host", "127.0.0.1"), ("--port", str(port))):
        if option in moved:
            moved[moved.index(option) + 1] = value
    return moved


def _environment(service: dict[str, Any], workdir: Path, port: int, **overrides: str) -> dict[str, str]:
    """The container's environment for a process on this machine."""
    container = {name: "" if value is None else str(value) for name, value in service["environment"].items()}
    return {
        **os.environ,  # PATH, and the test session's offline switches
        **container,
        # What the Dockerfile sets, pointed at folders of this test.
        "UPLOAD_DIR": str(workdir / "uploads"),
        "DATA_DIR": str(workdir / "data"),
        "TASK_DB_PATH": str(workdir / "data" / "tasks.db"),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        **overrides,
    }


def _health_check(service: dict[str, Any], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The service's health check, run as Docker runs a CMD check."""
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD", "a CMD check runs without a shell, so it needs none"
    return subprocess.run(_here(test[1:]), cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)


@contextlib.contextmanager
def _running(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as output:
        process = subprocess.Popen(_here(command), cwd=ROOT, env=env, stdout=output, stderr=output)
    try:
        yield process
    finally:
        process.terminate()
        process.wait(30)


def _until_healthy(service: dict[str, Any], env: dict[str, str], process: subprocess.Popen[bytes], log: Path) -> str:
    deadline = Deadline(240, "the health check to pass")
    while True:
        assert process.poll() is None, log.read_text()[-3000:]
        check = _health_check(service, env)
        if check.returncode == 0:
            return check.stdout
        deadline.check(check.stderr)
        time.sleep(1)


def test_single_container_commands_serve_and_pass_their_health_checks(tmp_path: Path) -> None:
    """The CPU file's container as `cp .env.example .env` sets it up: the image's command serves, and
    the CPU and GPU files' health checks pass against it with the example's `id:key` entry and with a bare key."""
    cpu = _services("docker-compose.cpu.yml", tmp_path / "cpu")[SERVICE]
    gpu = _services("docker-compose.yml", tmp_path / "gpu")[SERVICE]
    assert cpu["environment"]["API_KEYS"] == "main:your-secure-api-key"
    port = free_port()
    # One worker: what is tested is the commands, and a second copy of the model adds only time.
    env = _environment(cpu, tmp_path, port, MAX_CONCURRENT_TASKS="1")
    log = tmp_path / "server.log"
    with _running(cpu.get("command") or _image_command(), env, log) as server:
        assert "/ready answered 200" in _until_healthy(cpu, env, server, log)
        assert _health_check(gpu, _environment(gpu, tmp_path, port)).returncode == 0
        # Only the key in the entry is sent: the server's key, written bare, passes too ...
        assert _health_check(cpu, env | {"API_KEYS": "your-secure-api-key"}).returncode == 0
        # ... and a key the server does not know fails, saying so.
        refused = _health_check(cpu, env | {"API_KEYS": "main:another-key"})
        assert refused.returncode == 1
        assert "answered 401" in refused.stderr
        assert "another-key" not in refused.stdout + refused.stderr
    stopped = _health_check(cpu, env)
    assert stopped.returncode == 1, "a server that is gone is not healthy"


def test_scaled_commands_serve_and_pass_their_health_checks(tmp_path: Path, redis_url: str) -> None:
    """The scale file's API and worker commands with their environments from `.env.example`, on a real Redis
    and an S3 server (moto's, for MinIO): the API's health check and Redis's pass, and the worker's
    announcement makes the API ready."""
    services = _services("docker-compose.scale.yml", tmp_path / "scale")
    with _moto_server() as endpoint:
        _scaled(services, tmp_path, redis_url, endpoint)


def _scaled(services: dict[str, Any], tmp_path: Path, redis_url: str, s3_endpoint: str) -> None:
    api, worker, redis_service = services[SERVICE], services["worker-gpu0"], services["redis"]
    redis_port = redis_url.rsplit(":", 1)[1].split("/")[0]
    ping = redis_service["healthcheck"]["test"]
    assert ping[0] == "CMD"
    # The container's redis-cli reaches Redis on its default port; this one's runs elsewhere.
    pong = subprocess.run([ping[1], "-p", redis_port, *ping[2:]], capture_output=True, text=True, timeout=10)
    assert pong.stdout.strip() == "PONG", pong.stdout + pong.stderr

    # The bucket the minio-bucket service makes, and the credentials the compose file asks .env for.
    bucket = urlsplit(api["environment"]["STORAGE_URL"]).netloc
    botocore.session.get_session().create_client(
        "s3", endpoint_url=s3_endpoint, aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"], region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
    ).create_bucket(Bucket=bucket)  # fmt: skip
    outside = {"REDIS_URL": redis_url, "S3_ENDPOINT_URL": s3_endpoint, **CREDENTIALS}
    port = free_port()
    env = _environment(api, tmp_path, port, **outside)
    # large-v2 is a download (of ~3 GB): the worker runs the embedded model instead.
    worker_env = _environment(worker, tmp_path / "worker", port, WHISPER_MODEL="base", **outside)  # no shared folder
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    with _running(_listen_on(api["command"], port), env, api_log) as server:
        assert "/live answered 200" in _until_healthy(api, env, server, api_log)
        ready = f"http://127.0.0.1:{port}/ready"
        auth = {"X-API-Key": "your-secure-api-key"}
        assert httpx.get(ready, headers=auth).status_code == 503, "no worker yet"
        with _running(worker["command"], worker_env, worker_log) as celery_worker:
            deadline = Deadline(240, "the worker command to announce its loaded model")
            while (answer := httpx.get(ready, headers=auth)).status_code != 200:
                assert celery_worker.poll() is None, worker_log.read_text()[-3000:]
                deadline.check(answer.text)
                time.sleep(0.5)
