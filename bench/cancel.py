"""Cancel latency on the real model: from DELETE of a running task to the next queued task starting.

Starts the service as a real process (embedded model, one worker, so the queued task can start only
once the cancelled one has let go of the worker). For each stage it uploads a long clip and a short
one, waits until the long one is in that stage, deletes it, and measures until the short one's
`started_at`. Prints every sample, the median and the p95 per stage.

    .venv/bin/python -m bench.cancel [--runs 5] [--minutes 1.5] [--grace 5]
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


def _sample(client: httpx.Client, stage: Stage, long_clip: Path, short_clip: Path) -> float | None:
    """Seconds from DELETE to the queued task's start; None when the stage went by unseen."""
    running, queued = _upload(client, long_clip), _upload(client, short_clip)
    try:
        while (document := _status(client, running))["message"] != STAGE_MESSAGES[stage]:
            if document["status"] in ("completed", "failed"):
                return None
            time.sleep(0.05)
        time.sleep(0.5)  # well inside the stage, not at its first step
        deleted_at = time.time()
        client.delete(f"/api/v1/transcribe/task/{running}").raise_for_status()
        while (started := _status(client, queued)["started_at"]) is None:
            time.sleep(0.02)
        return datetime.fromisoformat(str(started)).timestamp() - deleted_at
    finally:
        client.delete(f"/api/v1/transcribe/task/{queued}")
        client.delete(f"/api/v1/transcribe/task/{running}")


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="cancels per stage")
    parser.add_argument("--minutes", type=float, default=1.5, help="length of the cancelled clip")
    parser.add_argument("--grace", type=float, default=5.0, help="CANCEL_GRACE_SECONDS for the service")
    args = parser.parse_args()

    port = _free_port()
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        long_clip, short_clip = speech(args.minutes, folder).path, speech(0.1, folder).path
        env = {
            **os.environ, "API_KEYS": KEY, "PORT": str(port), "HOST": "127.0.0.1", "MAX_CONCURRENT_TASKS": "1",
            "UPLOAD_DIR": str(folder / "uploads"), "DATA_DIR": str(folder / "data"), "LOG_LEVEL": "warning",
            "CANCEL_GRACE_SECONDS": str(args.grace), "HF_HUB_OFFLINE": "1",
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
                print(f"CANCEL_GRACE_SECONDS={args.grace}, {args.runs} cancels per stage, {args.minutes} min clip")
                for stage in STAGES:
                    samples = [s for _ in range(args.runs) if (s := _sample(client, stage, long_clip, short_clip))]
                    if not samples:
                        print(f"{stage.value:<14} never seen running (too short to catch)")
                        continue
                    listed = ", ".join(f"{value:.2f}" for value in samples)
                    print(
                        f"{stage.value:<14} median {statistics.median(samples):.2f} s  p95 {_p95(samples):.2f} s"
                        f"  (n={len(samples)}: {listed})"
                    )
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
