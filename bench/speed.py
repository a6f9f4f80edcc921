"""The service against a plain whisperx script: speed per stage, accuracy, memory, latency.

    .venv/bin/python -m bench                 # 1, 5 and 30 minutes, the pyannote sample, 20 tasks in a row
    .venv/bin/python -m bench --quick         # a 15 s clip with tiny.en: checks the bench itself runs
    .venv/bin/python -m bench --docs          # also refresh the table in docs/benchmarks.md

It builds its inputs (bench/inputs.py), then, in one run so that ratios are fair on a shared machine:
- per clip, a plain whisperx script (load_model with whisperx's default pyannote VAD → transcribe
  → the same diarizer → assign_word_speakers) and this service's pipeline called in-process, each
  timed per stage (decode, VAD, transcribe, word timing, diarize, assign) and, inside transcription,
  per call into the CTranslate2 Whisper model (encode, generate, align), with its WER;
- the same clip through the HTTP API of the service started as a real process (the client follows the
  task's event stream, as a client would, instead of polling), and API ÷ direct;
- status-endpoint latency p50/p99 polled at 20 Hz with no task running and while 2 run;
- cold start (process start to /ready), peak RSS of the API and each worker after every clip,
  and the workers' RSS after each of N tasks in a row (memory must not grow).

The result is printed as a table and written as JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import ServerSentEvent, connect_sse

from bench import report
from bench.inputs import Clip, pyannote_sample, speech

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
KEY = "bench-key"
WORKERS = 2  # the service's worker processes (MAX_CONCURRENT_TASKS)
STAGES = ("decode", "vad", "transcribe", "word_timing", "diarize", "assign")
# The CTranslate2 Whisper calls timed inside transcription: encoder, decoder, word timestamps (alignment heads).
MODEL_CALLS = ("encode", "generate", "align")
# The events that end a task's event stream.
TERMINAL = ("completed", "failed", "deleted")


@cache
def _normaliser() -> Any:
    # Whisper's own English normaliser: case, punctuation, spelling and numbers ("nine" = "9").
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer({})


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    normalise = _normaliser()
    return float(jiwer.wer(normalise(reference), normalise(hypothesis) or "-"))


def memory_mb(pid: int) -> dict[str, float]:
    """Resident memory now and at its peak (VmRSS, VmHWM) of a process, in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"rss": int(fields["VmRSS"].split()[0]) / 1024, "peak": int(fields["VmHWM"].split()[0]) / 1024}


def _clocked(function: Any, clock: dict[str, float], key: str) -> Any:
    """`function`, adding the seconds spent in each call to clock[key]."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            clock[key] += time.perf_counter() - started

    return wrapper


@contextlib.contextmanager
def timed(owner: Any, name: str, clock: dict[str, float]) -> Iterator[None]:
    """Add the time spent in `owner.name` (a function or method) to clock["vad"] while inside."""
    original = getattr(owner, name)
    setattr(owner, name, _clocked(original, clock, "vad"))
    try:
        yield
    finally:
        setattr(owner, name, original)


class _TimedWhisper:
    """Stands in for a CTranslate2 Whisper model: forwards everything, times encode, generate and align,
    and counts the calls into it and, for `encode`, the 30-s windows encoded (`encoded_windows`)."""

    def __init__(self, model: Any, clock: dict[str, float], calls: dict[str, int] | None = None) -> None:
        self._model, self._clock, self._calls = model, clock, calls

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._model, name)
        if not callable(attribute):
            return attribute
        function = _clocked(attribute, self._clock, name) if name in MODEL_CALLS else attribute
        calls = self._calls
        if calls is None:
            return function

        def counted(*args: Any, **kwargs: Any) -> Any:
            calls[name] = calls.get(name, 0) + 1
            if name == "encode":  # one StorageView of shape (windows, mels, frames)
                calls["encoded_windows"] = calls.get("encoded_windows", 0) + int(args[0].shape[0])
            return function(*args, **kwargs)

        return counted


@contextlib.contextmanager
def model_timed(owner: Any, clock: dict[str, float], calls: dict[str, int] | None = None) -> Iterator[None]:
    """Time (and count into `calls`) the CTranslate2 model calls of a faster-whisper `WhisperModel` (or
    whisperx's subclass) while inside.

    The CTranslate2 model is a C++ object whose methods cannot be replaced, so the proxy takes its place
    in `owner.model`, through which every encode, generate, align and detect_language call goes
    (batched or not).
    """
    original = owner.model
    owner.model = _TimedWhisper(original, clock, calls)
    try:
        yield
    finally:
        owner.model = original


class PlainWhisperX:
    """What a person would write with the whisperx library: its defaults, the same model and diarizer."""

    def __init__(self, model: str, device: str, compute_type: str, threads: int, batch_size: int) -> None:
        import whisperx

        started = time.perf_counter()
        self.model = whisperx.load_model(model, device, compute_type=compute_type, threads=threads)
        self.load_s = time.perf_counter() - started
        self.batch_size = batch_size
        # An English-only model has no language detection; a script would say "en".
        self.language = None if self.model.model.model.is_multilingual else "en"

    def run(self, clip: Clip, diarizer: Any) -> dict[str, Any]:
        import whisperx

        clock = {"vad": 0.0}
        model_clock = dict.fromkeys(MODEL_CALLS, 0.0)
        stages: dict[str, float | None] = {}
        mark = time.perf_counter()
        audio = whisperx.load_audio(str(clip.path))
        stages["decode"] = time.perf_counter() - mark
        mark = time.perf_counter()
        # whisperx calls its VAD model as `self.vad_model(...)`: time it through its class.
        vad = self.model.vad_model
        with timed(type(vad), "__call__", clock), model_timed(self.model.model, model_clock):
            result = self.model.transcribe(audio, batch_size=self.batch_size, language=self.language)
        stages["vad"] = clock["vad"]
        stages["transcribe"] = time.perf_counter() - mark - clock["vad"]
        stages["word_timing"] = None  # whisperx.align needs a wav2vec2 model from the hub: none offline
        mark = time.perf_counter()
        turns = diarizer(audio)
        stages["diarize"] = time.perf_counter() - mark
        mark = time.perf_counter()
        result = whisperx.assign_word_speakers(turns, result)
        stages["assign"] = time.perf_counter() - mark
        text = " ".join(segment["text"] for segment in result["segments"])
        return _row(clip, stages, model_clock, text, word_times=False)


def service_pipeline(clip: Clip, pipeline: Any, language: str | None = None) -> dict[str, Any]:
    """The service's own pipeline, in this process; stage times from its progress events."""
    import faster_whisper.transcribe

    from app.pipeline.base import Job

    first: dict[str, float] = {}
    last: dict[str, float] = {}

    def progress(stage: Any, fraction: float, text: str | None = None) -> None:
        first.setdefault(stage.value, time.perf_counter())
        last[stage.value] = time.perf_counter()

    clock = {"vad": 0.0}
    model_clock = dict.fromkeys(MODEL_CALLS, 0.0)
    started = time.perf_counter()
    # faster-whisper's batched transcription runs its silero VAD through this module-level function.
    with (
        pipeline._whisper.use(pipeline.model_name) as whisper,
        timed(faster_whisper.transcribe, "get_speech_timestamps", clock),
        model_timed(whisper.model, model_clock),
    ):
        output = pipeline.run(Job("bench", clip.path, language=language), progress)
    ended = time.perf_counter()
    # Decoding ends at its last event (language detection then counts as transcription); every
    # other stage ends where the next one's first event is.
    ends = [
        ("decode", last["decoding"]),
        ("transcribe", first.get("aligning", ended)),
        ("word_timing", first.get("diarizing", ended)),
        ("diarize", first.get("assigning speakers", ended)),
        ("assign", ended),
    ]
    stages: dict[str, float | None] = {}
    previous = started
    for name, end in ends:
        stages[name] = end - previous
        previous = end
    transcribe = stages["transcribe"] or 0.0
    stages["vad"], stages["transcribe"] = clock["vad"], transcribe - clock["vad"]
    text = " ".join(segment["text"] for segment in output.result["segments"])
    word_times = output.result.get("word_timing") is not None
    return _row(clip, stages, model_clock, text, word_times=word_times)


def _row(
    clip: Clip, stages: dict[str, float | None], model: dict[str, float], text: str, word_times: bool
) -> dict[str, Any]:
    total = sum(value for value in stages.values() if value is not None)
    transcription = (stages["vad"] or 0.0) + (stages["transcribe"] or 0.0)
    return {
        "stages_s": {name: None if stages[name] is None else round(stages[name] or 0.0, 3) for name in STAGES},
        "model_s": {name: round(model[name], 3) for name in MODEL_CALLS},
        "total_s": round(total, 3),
        "rtf": round(total / clip.seconds, 4),
        "transcription_rtf": round(transcription / clip.seconds, 4),
        "wer": round(wer(clip.reference, text), 4),
        "word_times": word_times,
    }


class Service:
    """The service as a real process on a loopback port."""

    def __init__(self, folder: Path, port: int, env: dict[str, str], workers: int = WORKERS) -> None:
        self.url = f"http://127.0.0.1:{port}"
        environment = {
            **os.environ, **env, "API_KEYS": KEY, "PORT": str(port), "HOST": "127.0.0.1",
            "MAX_CONCURRENT_TASKS": str(workers), "UPLOAD_DIR": str(folder / "uploads"), "LOG_LEVEL": "warning",
            "STANDBY_WORKERS": "0",  # the workers that run tasks, without a standby loading beside them
        }  # fmt: skip
        self.client = httpx.Client(base_url=self.url, headers={"X-API-Key": KEY}, timeout=600)
        self._started = started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.main"], cwd=ROOT, env=environment, stderr=subprocess.DEVNULL
        )
        self.api_up_s: float | None = None
        while not self._ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited with status {self.process.returncode} while starting")
            time.sleep(0.02)
        self.cold_start_s = time.perf_counter() - started

    def _ready(self) -> bool:
        try:
            response = self.client.get("/ready")
        except httpx.TransportError:
            return False
        if self.api_up_s is None:  # the first answer: the API is up, the models may still be loading
            self.api_up_s = time.perf_counter() - self._started
        return response.status_code == 200

    def workers(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return [int(pid) for pid in children if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]

    def memory(self) -> dict[str, dict[str, float]]:
        found = {"api": memory_mb(self.process.pid)}
        found.update({f"worker-{n}": memory_mb(pid) for n, pid in enumerate(sorted(self.workers()))})
        return {name: {key: round(value) for key, value in values.items()} for name, values in found.items()}

    def submit(self, clip: Clip, **form: str) -> str:
        with clip.path.open("rb") as file:
            response = self.client.post("/api/v1/transcribe/upload", files={"file": (clip.path.name, file)}, data=form)
        response.raise_for_status()
        task_id: str = response.json()["task_id"]
        return task_id

    def status(self, task_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.client.get(f"/api/v1/transcribe/status/{task_id}").json()
        return body

    def transcribe(self, clip: Clip, **form: str) -> dict[str, Any]:
        """Upload `clip`, follow the task's event stream to its end, then fetch the result once.

        A client that waits on the stream sends nothing while the task runs, so the API side's time is
        the service's, not that of requests competing with the transcription for the CPU.
        """
        started = time.perf_counter()
        task_id = self.submit(clip, **form)
        end = self.follow(task_id)
        elapsed = time.perf_counter() - started
        if end is None or end.event != "completed":
            problem = "its event stream ended early" if end is None else f"{end.event}: {end.json().get('error')}"
            raise RuntimeError(f"the service did not transcribe {clip.name}: {problem}")
        doc = self.status(task_id)
        text = " ".join(segment["text"] for segment in doc["result"]["segments"])
        wer_ = round(wer(clip.reference, text), 4)
        return {"total_s": round(elapsed, 3), "rtf": round(elapsed / clip.seconds, 4), "wer": wer_}

    def follow(self, task_id: str) -> ServerSentEvent | None:
        """Read the task's event stream to its terminal event (None if the stream ends before one)."""
        with connect_sse(self.client, "GET", f"/api/v1/transcribe/events/{task_id}") as events:
            return next((event for event in events.iter_sse() if event.event in TERMINAL), None)

    def warm_up(self, clip: Clip) -> None:
        """One task per worker, all at once: each worker has run a task before any is timed."""
        for task_id in [self.submit(clip) for _ in range(WORKERS)]:
            self.follow(task_id)

    def status_latency(self, probe: str, busy: Clip | None, seconds: float) -> dict[str, float]:
        """Status round trips for task `probe` at 20 Hz: idle, or while two tasks transcribe `busy`."""
        tasks = [self.submit(busy) for _ in range(2)] if busy else []
        if tasks:  # measure while both run, not while they wait in the queue
            while not all(self.status(task)["status"] == "processing" for task in tasks):
                time.sleep(0.05)
        samples = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            self.status(probe)
            samples.append(1000 * (time.perf_counter() - started))
            time.sleep(max(0.0, 0.05 - (time.perf_counter() - started)))
        running = sum(self.status(task)["status"] == "processing" for task in tasks)
        for task in tasks:
            self.client.delete(f"/api/v1/transcribe/task/{task}")
        quantiles = statistics.quantiles(samples, n=100)
        return {"p50_ms": round(quantiles[49], 2), "p99_ms": round(quantiles[98], 2), "samples": len(samples),
                "running_at_end": running}  # fmt: skip

    def wait_idle(self) -> None:
        while self.client.get("/health").json()["queue"]["processing"]:
            time.sleep(0.1)

    def close(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(30)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a 15 s clip, tiny.en, 3 tasks in a row: a smoke run")
    parser.add_argument("--minutes", type=float, nargs="+", help="speech clip lengths (default 1 5 30)")
    parser.add_argument("--model", help="Whisper model (default base; tiny.en with --quick)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where both sides run")
    parser.add_argument("--compute-type", default=None, help="default int8 on cpu, float16 on cuda")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for inference, both sides")
    parser.add_argument("--tasks-in-a-row", type=int, help="tasks run back to back for the memory check (default 20)")
    parser.add_argument("--port", type=int, default=0, help="port for the service (default: any free one)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON result")
    parser.add_argument("--docs", action="store_true", help="refresh the table in docs/benchmarks.md")
    args = parser.parse_args(argv)
    offline = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYANNOTE_METRICS_ENABLED": "false"}
    for name, value in offline.items():
        os.environ.setdefault(name, value)
    minutes = args.minutes or ([0.25] if args.quick else [1.0, 5.0, 30.0])
    model = args.model or ("tiny.en" if args.quick else "base")
    compute_type = args.compute_type or ("int8" if args.device == "cpu" else "float16")
    in_a_row = args.tasks_in_a_row or (3 if args.quick else 20)
    port = args.port or _free_port()
    result = run(args.quick, sorted(minutes), model, args.device, compute_type, args.threads, in_a_row, port)
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"bench-{time.strftime('%Y%m%d-%H%M%S')}{'-quick' if args.quick else ''}.json"
    # allow_nan=False: a NaN or infinity anywhere is a bug in the bench, not a figure.
    target.write_text(json.dumps(result, indent=2, allow_nan=False))
    print(report.table(result))
    print(f"wrote {target}")
    if args.docs:
        report.refresh_docs(result, target)
        print(f"refreshed {report.DOCS}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run(
    quick: bool, minutes: list[float], model: str, device: str, compute_type: str, threads: int, in_a_row: int,
    port: int,
) -> dict[str, Any]:  # fmt: skip
    from app.config import Settings
    from app.pipeline.models import resolve_whisper_model
    from app.pipeline.whisperx_pipeline import WhisperXPipeline

    env = {"WHISPER_MODEL": model, "DEVICE": device, "COMPUTE_TYPE": compute_type, "CPU_THREADS": str(threads)}
    result: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": _machine(device),
        "quick": quick,
        "settings": {"model": model, "device": device, "compute_type": compute_type, "threads": threads},
        "clips": [],
    }
    with tempfile.TemporaryDirectory(prefix="bench-") as temp:
        folder = Path(temp)
        print("building inputs…", file=sys.stderr, flush=True)
        clips = [speech(length, folder) for length in minutes] + ([] if quick else [pyannote_sample()])
        warm_up = speech(0.1, folder)
        print("starting the service…", file=sys.stderr, flush=True)
        service = Service(folder, port, env)
        try:
            result["cold_start"] = {
                "api_up_s": round(service.api_up_s or 0, 2),
                "ready_s": round(service.cold_start_s, 2),
            }
            settings = Settings(  # type: ignore[call-arg]
                _env_file=None, api_keys=KEY, max_concurrent_tasks=1, whisper_model=model, device=device,
                compute_type=compute_type, cpu_threads=threads,
            )  # fmt: skip
            pipeline = WhisperXPipeline(settings)
            pipeline.finish_loading()
            batch_size = pipeline.batch_size
            plain = PlainWhisperX(resolve_whisper_model(model, settings), device, compute_type, threads, batch_size)
            result["settings"].update(batch_size=batch_size, beam_size=pipeline.beam_size)
            result["plain_whisperx_load_s"] = round(plain.load_s, 2)
            # One short task each first: one-off costs (first calls, lazy set-up) are not what is compared.
            service_pipeline(warm_up, pipeline)
            plain.run(warm_up, pipeline._diarizer)
            service.warm_up(warm_up)
            for clip in sorted(clips, key=lambda clip: clip.seconds):
                print(f"{clip.name}: plain whisperx, service pipeline, API…", file=sys.stderr, flush=True)
                row: dict[str, Any] = {"clip": clip.name, "audio_s": round(clip.seconds, 1)}
                row["plain_whisperx"] = plain.run(clip, pipeline._diarizer)
                row["service_pipeline"] = service_pipeline(clip, pipeline)
                row["api"] = service.transcribe(clip)
                row["api_over_direct"] = round(row["api"]["total_s"] / row["service_pipeline"]["total_s"], 3)
                row["transcription_ratio"] = round(
                    row["service_pipeline"]["transcription_rtf"] / row["plain_whisperx"]["transcription_rtf"], 3
                )
                row["service_memory_mb"] = service.memory()
                result["clips"].append(row)
            del plain, pipeline
            shortest = min(clips, key=lambda clip: clip.seconds)
            print(f"{in_a_row} tasks in a row…", file=sys.stderr, flush=True)
            result["tasks_in_a_row"] = _in_a_row(service, shortest, in_a_row)
            print("status latency…", file=sys.stderr, flush=True)
            probe = service.submit(shortest)
            service.wait_idle()
            seconds = 3.0 if quick else 10.0
            idle = service.status_latency(probe, None, seconds)
            busy = service.status_latency(probe, max(clips, key=lambda clip: clip.seconds), seconds)
            ratio = round(busy["p99_ms"] / idle["p99_ms"], 2)
            result["status_latency"] = {"idle": idle, "two_tasks": busy, "p99_ratio": ratio}
            service.wait_idle()
            result["service_memory_mb"] = service.memory()
        finally:
            service.close()
    return result


def _in_a_row(service: Service, clip: Clip, count: int) -> dict[str, Any]:
    """Run `count` tasks one after another; the workers' resident memory after each."""
    after: list[dict[str, float]] = []
    for n in range(count):
        service.transcribe(clip)
        memory = {name: values["rss"] for name, values in service.memory().items() if name.startswith("worker")}
        after.append(memory)
        print(f"  task {n + 1:2d}: workers' RSS {memory} MiB", file=sys.stderr, flush=True)
    totals = [sum(memory.values()) for memory in after]
    # From the second task on: by then a worker has run a task, its one-off allocations made.
    base = totals[min(1, len(totals) - 1)]
    return {"clip": clip.name, "tasks": count, "workers_rss_mb": after, "growth_mb": round(totals[-1] - base)}


def _machine(device: str) -> dict[str, Any]:
    name = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    machine: dict[str, Any] = {"cpu": name, "cores": os.cpu_count() or 0, "load_1min": round(os.getloadavg()[0], 2)}
    if device == "cuda":
        import torch

        machine["gpu"] = torch.cuda.get_device_name(0)
    return machine


if __name__ == "__main__":
    main()
