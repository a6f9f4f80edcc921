"""How right the events' time estimates are: each `eta_seconds` against the time that was really left.

Starts the service (embedded model, one worker), transcribes generated speech once so the stage
costs are measured, then follows a second, longer upload's events and compares every estimate
with the time the task then took. Prints the error by how far the task had come.

    .venv/bin/python -m bench.eta [--seconds 60] [--model base]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from httpx_sse import connect_sse

from bench.end_to_end import KEY, ROOT, _free_port, _speech


def _run(url: str, audio: Path) -> list[tuple[float, float, float | None]]:
    """(seconds since upload, progress, eta_seconds) for each event of one task."""
    headers = {"X-API-Key": KEY}
    sent = time.perf_counter()
    with audio.open("rb") as file:
        task_id = httpx.post(f"{url}/api/v1/transcribe/upload", headers=headers, files={"file": file}).json()["task_id"]
    seen = []
    with (
        httpx.Client(base_url=url, headers=headers, timeout=600) as client,
        connect_sse(client, "GET", f"/api/v1/transcribe/events/{task_id}") as source,
    ):
        for event in source.iter_sse():
            data = json.loads(event.data)
            seen.append((time.perf_counter() - sent, data["progress"], data["eta_seconds"]))
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the measured upload's speech")
    parser.add_argument("--model", default="base", help="WHISPER_MODEL for the service")
    args = parser.parse_args()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        (folder / "short").mkdir()
        short, audio = _speech(args.seconds / 3, folder / "short"), _speech(args.seconds, folder)
        env = {
            **os.environ, "API_KEYS": KEY, "PORT": str(port), "HOST": "127.0.0.1", "MAX_CONCURRENT_TASKS": "1",
            "WHISPER_MODEL": args.model, "UPLOAD_DIR": str(folder / "uploads"), "LOG_LEVEL": "warning",
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYANNOTE_METRICS_ENABLED": "false",
            "STANDBY_WORKERS": "0",  # no standby loading beside the timed task
        }  # fmt: skip
        server = subprocess.Popen([sys.executable, "-m", "app.main"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
        try:
            while True:
                try:
                    if httpx.get(f"{url}/health", headers={"X-API-Key": KEY}).json()["model_loaded"]:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            first = _run(url, short)
            measured = _run(url, audio)
        finally:
            server.terminate()
            server.wait(30)

    total = measured[-1][0]
    errors: dict[str, list[float]] = {"0-25 %": [], "25-50 %": [], "50-75 %": [], "75-100 %": []}
    for at, progress, eta in measured[:-1]:
        if eta is not None:
            band = list(errors)[min(int(progress // 25), 3)]
            errors[band].append((eta - (total - at)) / total)
    report = {
        "audio_seconds": args.seconds,
        "task_seconds": round(total, 1),
        "first_task_estimates": sum(eta is not None for _, _, eta in first),
        "events": len(measured),
        "events_per_second": round(len(measured) / total, 2),
        # Estimate minus the time really left, as a share of the whole task: + is too long.
        "median_error_by_progress": {
            band: round(statistics.median(values), 3) if values else None for band, values in errors.items()
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
