"""Speed, accuracy and memory of the service against a plain whisperx script, in one run.

For each clip length (generated espeak-ng speech with known text, looped to length) it measures:
- a plain whisperx script: load_audio → load_model (whisperx's default pyannote VAD) →
  transcribe → assign speakers from the same embedded diarizer (offline there is no
  alignment model, so the script gets no word times);
- the service's pipeline called directly, stage by stage (decode, transcribe incl. VAD,
  word timing, diarize, assign);
- the same file through the HTTP API of a running service (upload → completed), and the
  ratio API ÷ direct pipeline;
- WER against the known text (lower case, no punctuation, digits as spoken by whisper kept);
- status-endpoint latency (p50/p99, polled at 20 Hz) with no task and with 2 tasks running;
- cold start (process start to /health reporting the models loaded) and peak RSS per process.

    .venv/bin/python -m bench.speed [--minutes 1 5] [--threads 2]

Prints a table and writes JSON under bench/results/. Ratios are taken within one run, since
this machine is shared and absolute times drift.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
KEY = "bench-key"
TEXT = (
    "The weather is warm and sunny today. My brother likes to read books in the garden. "
    "We will meet at the station after lunch. Please bring some water and a small map. "
    "The little dog runs across the green field. Our neighbours planted apple trees last spring."
)


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    return float(jiwer.wer(normalise(reference), normalise(hypothesis)))


def make_clip(minutes: float, folder: Path) -> tuple[Path, str]:
    one = folder / "one.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(one), TEXT], check=True)
    length = float(subprocess.run(["soxi", "-D", str(one)], capture_output=True, text=True, check=True).stdout)
    repeats = max(1, round(minutes * 60 / length))
    clip = folder / f"speech-{minutes:g}min.wav"
    subprocess.run(["sox", *[str(one)] * repeats, "-r", "16000", "-c", "1", str(clip)], check=True)
    return clip, " ".join([TEXT] * repeats)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def plain_whisperx(clip: Path, settings: Any, diarizer: Any) -> dict[str, Any]:
    import whisperx

    from app.pipeline.models import resolve_whisper_model

    stages: dict[str, float] = {}
    started = time.perf_counter()
    model = whisperx.load_model(
        resolve_whisper_model("base", settings.model_cache_dir),
        "cpu",
        compute_type="int8",
        threads=settings.cpu_threads,
    )
    load = time.perf_counter() - started
    mark = time.perf_counter()
    audio = whisperx.load_audio(str(clip))
    stages["decode"] = time.perf_counter() - mark
    mark = time.perf_counter()
    result = model.transcribe(audio, batch_size=settings.batch_size)
    stages["transcribe"] = time.perf_counter() - mark
    mark = time.perf_counter()
    turns = diarizer(audio)
    stages["diarize"] = time.perf_counter() - mark
    mark = time.perf_counter()
    result = whisperx.assign_word_speakers(turns, result)
    stages["assign"] = time.perf_counter() - mark
    text = " ".join(segment["text"] for segment in result["segments"])
    return {"load_s": round(load, 2), "stages": stages, "total": sum(stages.values()), "text": text}


def service_pipeline(clip: Path, pipeline: Any) -> dict[str, Any]:
    from app.pipeline.base import Job

    firsts: dict[str, float] = {}

    def progress(stage: Any, fraction: float) -> None:
        firsts.setdefault(stage.value, time.perf_counter())

    started = time.perf_counter()
    output = pipeline.run(Job("bench", clip), progress)
    ended = time.perf_counter()
    names = list(firsts)
    stages = {
        name: (firsts[names[i + 1]] if i + 1 < len(names) else ended) - firsts[name] for i, name in enumerate(names)
    }
    text = " ".join(segment["text"] for segment in output.result["segments"])
    return {"stages": stages, "total": ended - started, "text": text}


class Service:
    """The service as a real process on a free loopback port."""

    def __init__(self, folder: Path, threads: int) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ, "API_KEYS": KEY, "PORT": str(self.port), "HOST": "127.0.0.1", "MAX_CONCURRENT_TASKS": "2",
            "CPU_THREADS": str(threads), "UPLOAD_DIR": str(folder / "uploads"), "LOG_LEVEL": "warning",
        }  # fmt: skip
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.main"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL
        )
        while not self._loaded():
            time.sleep(0.05)
        self.cold_start = time.perf_counter() - started

    def _loaded(self) -> bool:
        try:
            return bool(self.health()["model_loaded"])
        except httpx.TransportError:
            return False

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.url}/health", headers={"X-API-Key": KEY}).json()
        return body

    def submit(self, clip: Path) -> str:
        with clip.open("rb") as file:
            response = httpx.post(
                f"{self.url}/api/v1/transcribe/upload", headers={"X-API-Key": KEY}, files={"file": file}, timeout=120
            )
        task_id: str = response.json()["task_id"]
        return task_id

    def status(self, client: httpx.Client, task_id: str) -> dict[str, Any]:
        body: dict[str, Any] = client.get(f"{self.url}/api/v1/transcribe/status/{task_id}").json()
        return body

    def transcribe(self, clip: Path) -> dict[str, Any]:
        started = time.perf_counter()
        task_id = self.submit(clip)
        with httpx.Client(headers={"X-API-Key": KEY}) as client:
            while (doc := self.status(client, task_id))["status"] not in ("completed", "failed"):
                time.sleep(0.05)
        elapsed = time.perf_counter() - started
        text = " ".join(segment["text"] for segment in (doc["result"] or {"segments": []})["segments"])
        return {"total": elapsed, "status": doc["status"], "text": text}

    def status_latency(self, probe: str, busy_clip: Path | None, seconds: float = 8.0) -> dict[str, float]:
        """Status round trips for task `probe` at 20 Hz: idle, or while two tasks transcribe `busy_clip`."""
        tasks = [self.submit(busy_clip) for _ in range(2)] if busy_clip else []
        samples = []
        with httpx.Client(headers={"X-API-Key": KEY}) as client:
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                self.status(client, probe)
                samples.append(1000 * (time.perf_counter() - started))
                time.sleep(max(0.0, 0.05 - (time.perf_counter() - started)))
            running = sum(self.status(client, task)["status"] == "processing" for task in tasks)
            for task in tasks:
                client.delete(f"{self.url}/api/v1/transcribe/task/{task}")
        quantiles = statistics.quantiles(samples, n=100)
        return {"p50_ms": round(quantiles[49], 2), "p99_ms": round(quantiles[98], 2), "still_running": running}

    def close(self) -> dict[str, float]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        workers = [int(pid) for pid in children if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]
        memory = {"api": round(peak_rss_mb(self.process.pid))}
        memory.update({f"worker-{n}": round(peak_rss_mb(pid)) for n, pid in enumerate(workers)})
        self.process.terminate()
        self.process.wait(30)
        return memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 5.0], help="clip lengths to run")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for inference")
    args = parser.parse_args()
    for name, value in {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYANNOTE_METRICS_ENABLED": "false",
    }.items():
        os.environ.setdefault(name, value)

    from app.config import Settings
    from app.pipeline.whisperx_pipeline import WhisperXPipeline

    report: dict[str, Any] = {"threads": args.threads, "clips": []}
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as temp:
        folder = Path(temp)
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, api_keys=KEY, max_concurrent_tasks=1, cpu_threads=args.threads,
            whisper_model="base", compute_type="int8",
        )  # fmt: skip
        pipeline = WhisperXPipeline(settings)
        clips = [make_clip(minutes, folder) for minutes in args.minutes]
        service = Service(folder, args.threads)
        report["cold_start_s"] = round(service.cold_start, 2)
        # One short task each first: one-off costs (first calls, lookups) are not what is compared.
        warm_up, _ = make_clip(0.2, folder)
        service_pipeline(warm_up, pipeline)
        service.transcribe(warm_up)
        for clip, reference in clips:
            seconds = float(subprocess.run(["soxi", "-D", str(clip)], capture_output=True, text=True).stdout)
            plain = plain_whisperx(clip, settings, pipeline._diarizer)
            direct = service_pipeline(clip, pipeline)
            api = service.transcribe(clip)
            row = {
                "clip": clip.name,
                "audio_s": round(seconds, 1),
                "plain_whisperx": {
                    "stages_s": {k: round(v, 2) for k, v in plain["stages"].items()},
                    "rtf": round(plain["total"] / seconds, 4),
                    "transcribe_rtf": round(plain["stages"]["transcribe"] / seconds, 4),
                    "wer": round(wer(reference, plain["text"]), 4),
                    "word_times": False,
                },
                "service_pipeline": {
                    "stages_s": {k: round(v, 2) for k, v in direct["stages"].items()},
                    "rtf": round(direct["total"] / seconds, 4),
                    "transcribe_rtf": round(direct["stages"].get("transcribing", 0) / seconds, 4),
                    "wer": round(wer(reference, direct["text"]), 4),
                    "word_times": True,
                },
                "api": {
                    "seconds": round(api["total"], 2),
                    "rtf": round(api["total"] / seconds, 4),
                    "wer": round(wer(reference, api["text"]), 4),
                },
                "api_over_direct": round(api["total"] / direct["total"], 3),
            }
            report["clips"].append(row)
        probe = service.submit(clips[0][0])
        while service.health()["queue"]["processing"]:
            time.sleep(0.2)
        report["status_latency_idle"] = service.status_latency(probe, None)
        report["status_latency_two_tasks"] = service.status_latency(probe, clips[-1][0])
        report["peak_rss_mb"] = service.close()

    print(json.dumps(report, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    target = RESULTS / f"speed-{time.strftime('%Y%m%d-%H%M%S')}.json"
    target.write_text(json.dumps(report, indent=2))
    print(f"wrote {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
