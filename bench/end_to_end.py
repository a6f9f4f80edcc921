"""End-to-end figures for one upload: cold start, time to result, real-time factor, peak memory.

Starts the service as a real process (embedded model, one worker), generates about a minute of
espeak-ng speech, uploads it through the HTTP API and polls until it completes. Memory is each
process's peak resident set (VmHWM), for the API process and its worker.

    .venv/bin/python -m bench.end_to_end [--seconds 60] [--model base]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-key"
SENTENCES = (
    "The weather is warm and sunny today. My brother likes to read books in the garden. "
    "We will meet at the station after lunch. Please bring some water and a small map. "
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _children(pid: int) -> list[int]:
    found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in found]


def _speech(seconds: float, folder: Path) -> Path:
    raw, target = folder / "one.wav", folder / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), SENTENCES], check=True)
    one = float(subprocess.run(["soxi", "-D", str(raw)], capture_output=True, text=True, check=True).stdout)
    repeats = max(1, round(seconds / one))
    subprocess.run(["sox", *[str(raw)] * repeats, "-r", "16000", "-c", "1", str(target)], check=True)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the generated speech")
    parser.add_argument("--model", default="base", help="WHISPER_MODEL for the service")
    args = parser.parse_args()

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    headers = {"X-API-Key": KEY}
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        audio = _speech(args.seconds, folder)
        duration = float(subprocess.run(["soxi", "-D", str(audio)], capture_output=True, text=True).stdout)
        env = {
            **os.environ, "API_KEYS": KEY, "PORT": str(port), "HOST": "127.0.0.1", "MAX_CONCURRENT_TASKS": "1",
            "WHISPER_MODEL": args.model, "UPLOAD_DIR": str(folder / "uploads"), "LOG_LEVEL": "warning",
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYANNOTE_METRICS_ENABLED": "false",
            "STANDBY_WORKERS": "0",  # no standby loading beside the timed task
        }  # fmt: skip
        started = time.perf_counter()
        server = subprocess.Popen([sys.executable, "-m", "app.main"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
        try:
            while True:
                try:
                    if httpx.get(f"{url}/health", headers=headers).json()["model_loaded"]:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            cold_start = time.perf_counter() - started

            sent = time.perf_counter()
            with audio.open("rb") as file:
                task_id = httpx.post(
                    f"{url}/api/v1/transcribe/upload", headers=headers, files={"file": file}, timeout=60
                ).json()["task_id"]
            while (doc := httpx.get(f"{url}/api/v1/transcribe/status/{task_id}", headers=headers).json())[
                "status"
            ] not in ("completed", "failed"):
                time.sleep(0.1)
            elapsed = time.perf_counter() - sent
            memory = {"api": _peak_rss_mb(server.pid)}
            memory.update({f"worker-{pid}": _peak_rss_mb(pid) for pid in _children(server.pid)})
        finally:
            server.terminate()
            server.wait(30)

    report = {
        "model": args.model,
        "audio_seconds": round(duration, 1),
        "status": doc["status"],
        "cold_start_seconds": round(cold_start, 2),
        "end_to_end_seconds": round(elapsed, 2),
        "real_time_factor": round(elapsed / duration, 3),
        "peak_rss_mb": {name: round(value) for name, value in memory.items()},
        "word_timing": (doc.get("result") or {}).get("word_timing"),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
