"""TASK_BACKEND=celery on this machine: throughput with 1 and 2 worker processes, and the
latency the distributed path adds to one task compared with the local backend.

Starts its own redis-server, workers (`python -m app.tasks.celery_worker`, one pool process each) and API
servers on loopback, on the embedded model and generated speech:
    python -m bench.distributed [--model tiny.en] [--tasks 6] [--runs 3]
        [--redis-port 6390] [--api-port 8190]   (uses the API port and the next one)
Prints the figures. Throughput is audio minutes transcribed per wall-clock minute, from the
first upload until the last task completed. Latency is upload to completed as a client sees
it, polling every 50 ms, after one warm-up task each: a local server and a celery cluster run
side by side (idle but for the task being timed) and take the clip in turn, so a change in
the machine's load during the run weighs on both alike; the median of --runs each.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-key"
AUTH = {"X-API-Key": KEY}
TEXT = (
    "The weather is warm and sunny today. My brother likes to read books in the garden. "
    "We will meet at the station after lunch. Please bring some water and a small map."
)


def _speech(folder: Path) -> tuple[Path, float]:
    raw, clip = folder / "raw.wav", folder / "clip.wav"
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(raw), TEXT], check=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", str(clip)], check=True)
    seconds = float(subprocess.run(["soxi", "-D", str(clip)], capture_output=True, text=True, check=True).stdout)
    return clip, seconds


class Processes:
    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder, self.env, self.started = folder, env, list[subprocess.Popen[bytes]]()

    def start(self, name: str, command: list[str], **extra: str) -> subprocess.Popen[bytes]:
        log = (self.folder / f"{name}.log").open("ab")
        process = subprocess.Popen(
            command, cwd=ROOT, env={**self.env, **extra}, stdout=log, stderr=log, start_new_session=True
        )
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.started:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        self.started.clear()


def _start(processes: Processes, backend: str, workers: int, api_port: int) -> str:
    url = f"http://127.0.0.1:{api_port}"
    for number in range(workers):
        processes.start(f"worker-{backend}-{workers}-{number}", [sys.executable, "-m", "app.tasks.celery_worker"])
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(api_port)]
    processes.start(f"api-{backend}-{workers}", command, TASK_BACKEND=backend)
    deadline = time.monotonic() + 600
    while True:
        with contextlib.suppress(httpx.TransportError):
            health = httpx.get(f"{url}/health", headers=AUTH).json()
            # Local: its own workers loaded. Celery: every worker announced its loaded model.
            if health["model_loaded"] and (backend == "local" or _announced(processes.env) >= workers):
                return url
        if time.monotonic() > deadline:
            raise SystemExit(f"the {backend} service did not become ready; see {processes.folder}")
        time.sleep(0.5)


def _announced(env: dict[str, str]) -> int:
    import redis

    return len(redis.Redis.from_url(env["REDIS_URL"]).keys("whisperx:worker:*"))


def _submit(client: httpx.Client, clip: Path) -> str:
    with clip.open("rb") as audio:
        response = client.post("/api/v1/transcribe/upload", files={"file": (clip.name, audio)}, data={"language": "en"})
    response.raise_for_status()
    return str(response.json()["task_id"])


def _wait(client: httpx.Client, task_id: str) -> dict[str, Any]:
    while True:
        status: dict[str, Any] = client.get(f"/api/v1/transcribe/status/{task_id}").json()
        if status["status"] == "completed":
            return status
        if status["status"] == "failed":
            raise SystemExit(f"task failed: {status['error']}")
        time.sleep(0.05)


def _latencies(urls: list[str], clip: Path, runs: int) -> list[tuple[list[float], list[float]]]:
    """Per server, the clip taken in turn: upload-to-completed times, and the delay from the
    task's creation to a worker starting it (its own created_at and started_at)."""
    clients = [httpx.Client(base_url=url, headers=AUTH, timeout=60) for url in urls]
    measured: list[tuple[list[float], list[float]]] = [([], []) for _ in urls]
    for client in clients:
        _wait(client, _submit(client, clip))  # warm-up: first-use costs are not the backend's
    for _ in range(runs):
        for client, (totals, delays) in zip(clients, measured, strict=True):
            started = time.monotonic()
            status = _wait(client, _submit(client, clip))
            totals.append(time.monotonic() - started)
            created, began = (datetime.fromisoformat(status[name]) for name in ("created_at", "started_at"))
            delays.append((began - created).total_seconds())
    for client in clients:
        client.close()
    return measured


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} s  (min {min(values):.2f}, max {max(values):.2f})"


def _throughput(url: str, clip: Path, seconds: float, tasks: int) -> float:
    with httpx.Client(base_url=url, headers=AUTH, timeout=60) as client:
        _wait(client, _submit(client, clip))  # warm-up
        started = time.monotonic()
        for task_id in [_submit(client, clip) for _ in range(tasks)]:
            _wait(client, task_id)
        elapsed = time.monotonic() - started
    return (tasks * seconds / 60) / (elapsed / 60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--tasks", type=int, default=6, help="tasks per throughput run")
    parser.add_argument("--runs", type=int, default=3, help="tasks per latency measurement")
    parser.add_argument("--redis-port", type=int, default=6390)
    parser.add_argument("--api-port", type=int, default=8190)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as temp:
        folder = Path(temp)
        clip, seconds = _speech(folder)
        redis_url = f"redis://127.0.0.1:{args.redis_port}/0"
        redis_command = ["redis-server", "--port", str(args.redis_port), "--bind", "127.0.0.1"]
        redis_server = subprocess.Popen(
            [*redis_command, "--save", "", "--appendonly", "no", "--dir", temp], stdout=subprocess.DEVNULL
        )
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYANNOTE_METRICS_ENABLED": "false",
            "API_KEYS": KEY,
            "REDIS_URL": redis_url,
            "UPLOAD_DIR": str(folder / "uploads"),
            "WHISPER_MODEL": args.model,
            "MAX_CONCURRENT_TASKS": "1",
            "STANDBY_WORKERS": "0",  # one loaded worker on each side
            "LOG_LEVEL": "warning",
        }
        processes = Processes(folder, env)
        try:
            time.sleep(0.5)
            local = _start(processes, "local", 0, args.api_port)
            celery = _start(processes, "celery", 1, args.api_port + 1)
            (local_total, local_delay), (celery_total, celery_delay) = _latencies([local, celery], clip, args.runs)
            processes.stop_all()
            one = _throughput(_start(processes, "celery", 1, args.api_port), clip, seconds, args.tasks)
            processes.stop_all()
            two = _throughput(_start(processes, "celery", 2, args.api_port), clip, seconds, args.tasks)
        finally:
            processes.stop_all()
            redis_server.terminate()
            redis_server.wait(10)

    print(f"model {args.model}, clip {seconds:.1f} s of speech, speaker labels on, {os.cpu_count()} CPU cores")
    print(f"median of {args.runs} tasks each, local and celery interleaved:")
    print(f"upload to completed, local backend     {_spread(local_total)}")
    print(f"upload to completed, celery backend    {_spread(celery_total)}")
    print(f"creation to worker start, local        {_spread(local_delay)}")
    print(f"creation to worker start, celery       {_spread(celery_delay)}")
    added = statistics.median(celery_delay) - statistics.median(local_delay)
    print(f"added by the distributed path (start)  {added:+6.3f} s")
    print(f"throughput, 1 worker process           {one:6.2f} audio-min/min  ({args.tasks} tasks)")
    print(f"throughput, 2 worker processes         {two:6.2f} audio-min/min  ({args.tasks} tasks)")
    print(f"speed-up                               {two / one:6.2f}x")


if __name__ == "__main__":
    main()
