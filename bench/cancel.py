"""Cancel latency on the real model: from DELETE of a running task to the next queued task starting.

Starts the service as a real process (embedded model, one worker, so the queued task can start only
once the cancelled one has let go of the worker). For each stage it uploads a long clip and a short
one, waits until the long one is in that stage, deletes it, and measures two things:
- `started`: until the short one's `started_at` (the slot took it);
- `working`: until the short one's first progress step (the pipeline is running it; a task given to a
  worker that still loads its models would show `started` early and `working` late).
Between samples it lets the short task finish and the service settle (a killed worker's replacement
loads meanwhile). Prints every sample, the median and the p95 per stage, then the memory of the
service's processes (RSS and PSS, from /proc).

    .venv/bin/python -m bench.cancel [--runs 5] [--minutes 1.5] [--grace 1] [--standby 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

from app.pipeline.base import Stage
from app.tasks.progress import STAGE_MESSAGES
from bench.concurrency import _rss_and_pss_mb, _tree
from bench.end_to_end import KEY, ROOT, _free_port
from bench.inputs import speech

HEADERS = {"X-API-Key": KEY}
STAGES = (Stage.TRANSCRIBE, Stage.ALIGN, Stage.DIARIZE)


def _upload(client: httpx.Client, path: Path) -> str:
    with path.open("rb") as audio:
        answer = client.post("/api/v1/transcribe/upload", files={"file": audio}, data={"language": "en"})
    answer.raise_for_status()
    return str(answer.json()["task_id"])


def _status(client: httpx.Client, task_id: str) -> dict[str, object]:
    document: dict[str, object] = client.get(f"/api/v1/transcribe/status/{task_id}").json()
    return document


def _sample(
    client: httpx.Client, stage: Stage, long_clip: Path, short_clip: Path, settle: float
) -> tuple[float, float] | None:
    """Seconds from DELETE to the queued task's start and to its first progress step; None when the
    stage went by unseen."""
    running, queued = _upload(client, long_clip), _upload(client, short_clip)
    try:
        while (document := _status(client, running))["message"] != STAGE_MESSAGES[stage]:
            if document["status"] in ("completed", "failed"):
                return None
            time.sleep(0.05)
        time.sleep(0.5)  # well inside the stage, not at its first step
        deleted_at = time.time()
        client.delete(f"/api/v1/transcribe/task/{running}").raise_for_status()
        # "Starting" is the message from the slot taking the task until the pipeline's first step.
        while (document := _status(client, queued))["message"] in ("Starting", "Waiting in the queue"):
            time.sleep(0.02)
        working = time.time() - deleted_at
        started = datetime.fromisoformat(str(document["started_at"])).timestamp() - deleted_at
        while _status(client, queued)["status"] not in ("completed", "failed"):
            time.sleep(0.2)
        time.sleep(settle)
        return started, working
    finally:
        client.delete(f"/api/v1/transcribe/task/{queued}")
        client.delete(f"/api/v1/transcribe/task/{running}")


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1] if len(values) > 1 else values[0]


def _figures(name: str, values: list[float]) -> str:
    listed = ", ".join(f"{value:.2f}" for value in values)
    return f"{name} median {statistics.median(values):5.2f} s  p95 {_p95(values):5.2f} s  ({listed})"


def _memory(server: int) -> None:
    """RSS and PSS of each process of the service (PSS shares each shared page among its users)."""
    total_rss = total_pss = 0.0
    for pid in _tree(server):
        rss, pss = _rss_and_pss_mb(pid)
        total_rss, total_pss = total_rss + rss, total_pss + pss
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            command = cmdline.read().replace(b"\0", b" ").decode()[:60]
        print(f"  pid {pid:>7}  RSS {rss:7.0f} MB  PSS {pss:7.0f} MB  {command}")
    print(f"  all          RSS {total_rss:7.0f} MB  PSS {total_pss:7.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="cancels per stage")
    parser.add_argument("--minutes", type=float, default=1.5, help="length of the cancelled clip")
    parser.add_argument("--grace", type=float, default=1.0, help="CANCEL_GRACE_SECONDS for the service")
    parser.add_argument("--standby", type=int, default=1, help="STANDBY_WORKERS for the service")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds to wait after each sample")
    args = parser.parse_args()

    port = _free_port()
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        long_clip, short_clip = speech(args.minutes, folder).path, speech(0.1, folder).path
        env = {
            **os.environ, "API_KEYS": KEY, "PORT": str(port), "HOST": "127.0.0.1", "MAX_CONCURRENT_TASKS": "1",
            "UPLOAD_DIR": str(folder / "uploads"), "DATA_DIR": str(folder / "data"), "LOG_LEVEL": "warning",
            "CANCEL_GRACE_SECONDS": str(args.grace), "STANDBY_WORKERS": str(args.standby), "HF_HUB_OFFLINE": "1",
        }  # fmt: skip
        env.pop("WHISPER_MODEL", None)
        server = subprocess.Popen([sys.executable, "-m", "app.main"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=HEADERS, timeout=60) as client:
                while True:
                    try:
                        if client.get("/health").json()["model_loaded"]:
                            break
                    except httpx.TransportError:
                        pass
                    time.sleep(0.2)
                time.sleep(args.settle)  # the standby workers load after the first
                print(
                    f"CANCEL_GRACE_SECONDS={args.grace} STANDBY_WORKERS={args.standby}, {args.runs} cancels per "
                    f"stage, {args.minutes} min clip, load average {os.getloadavg()[0]:.2f} at start"
                )
                print("memory of the service's processes, idle:")
                _memory(server.pid)
                for stage in STAGES:
                    samples: list[tuple[float, float]] = []
                    missed = 0
                    # A stage missed twice in a row is one the pipeline passes in an instant (words timed
                    # by Whisper in the transcription pass, when no alignment model is cached): move on.
                    while len(samples) < args.runs and missed < 2:
                        sample = _sample(client, stage, long_clip, short_clip, args.settle)
                        samples += [sample] if sample else []
                        missed = 0 if sample else missed + 1
                    if not samples:
                        print(f"{stage.value:<14} never seen running (too short to catch)")
                        continue
                    print(f"{stage.value:<14} {_figures('started', [started for started, _ in samples])}")
                    print(f"{'':<14} {_figures('working', [working for _, working in samples])}")
                print(f"load average {os.getloadavg()[0]:.2f} at the end")
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
