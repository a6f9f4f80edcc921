"""Models from a hub, cache first: what a download, a cached load and an unreachable hub cost, and what a
worker holds with two Whisper models loaded and after the idle one is unloaded.

    .venv/bin/python -m bench.models

Runs against a hub protocol server on loopback (tests/hub_server.py) that serves the embedded `base`
files as Systran/faster-whisper-base, so the figures are the service's own overhead on this machine,
not an internet link's.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path


def _rss_mib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    return 0


def main() -> None:
    from tests.hub_server import Hub, black_hole

    work = Path(tempfile.mkdtemp(prefix="bench-models-"))
    repo = "Systran/faster-whisper-base"
    hub = Hub({repo: work / "assembled" / "embedded" / "base"})
    # huggingface_hub reads these once, at import: the hub's port stays the endpoint throughout
    # (a black hole takes it over later).
    os.environ.update(HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0", TRANSFORMERS_OFFLINE="0")
    os.environ["PYANNOTE_METRICS_ENABLED"] = "false"
    import faster_whisper

    from app.config import Settings
    from app.models.hub import ModelUnavailable, fetch_whisper
    from app.pipeline.models import embedded_whisper_model

    assert embedded_whisper_model("base", work / "assembled") is not None

    def settings(cache: str, **values: object) -> Settings:
        return Settings(_env_file=None, model_cache_dir=work / cache, **values)  # type: ignore[call-arg]

    def timed_load(path: Path) -> float:
        started = time.perf_counter()
        faster_whisper.WhisperModel(str(path), "cpu", compute_type="int8", cpu_threads=2)
        return time.perf_counter() - started

    hub.start()
    try:
        started = time.perf_counter()
        path = fetch_whisper(repo, settings("cache"))
        download = time.perf_counter() - started
        size = (path / "model.bin").stat().st_size / 2**20
        first_load = timed_load(path)
    finally:
        hub.stop()
    started = time.perf_counter()
    path = fetch_whisper(repo, settings("cache"))
    lookup = time.perf_counter() - started
    cached_load = timed_load(path)
    print(f"base ({size:.0f} MiB) through the loopback hub: download {download:.2f} s, then load {first_load:.2f} s")
    print(f"base from the cache (hub gone): cache lookup {lookup * 1000:.0f} ms, load {cached_load:.2f} s")

    message = ""
    with black_hole(hub.port):
        started = time.perf_counter()
        try:
            fetch_whisper(repo, settings("empty"))
        except ModelUnavailable as error:
            message = str(error)
        elapsed = time.perf_counter() - started
    print(f"uncached model, hub black-holed: clear error after {elapsed:.2f} s: {message}")

    _worker_memory(settings("cache", offline=True, max_loaded_models=2, model_idle_seconds=1.0), work)


def _worker_memory(settings: object, work: Path) -> None:
    """A worker as the service runs it (torch and the diarizer loaded), base then tiny.en, then idle."""
    from app.pipeline.base import Job
    from app.pipeline.whisperx_pipeline import WhisperXPipeline
    from tests.conftest import speak

    audio = speak("The weather is warm and sunny today.", work / "speech.wav")
    pipeline = WhisperXPipeline(settings)  # type: ignore[arg-type]
    pipeline.finish_loading()

    def run(model: str | None) -> None:
        job = Job(task_id="bench", audio_path=audio, enable_diarization=False, model=model)
        pipeline.run(job, lambda *_: None)
        pipeline.release()

    run(None)
    one = _rss_mib()
    print(f"worker RSS, base loaded (after a task):          {one:5d} MiB  loaded {pipeline.info().loaded_models}")
    run("tiny.en")
    two = _rss_mib()
    print(f"worker RSS, base + tiny.en loaded:               {two:5d} MiB  loaded {pipeline.info().loaded_models}")
    time.sleep(1.5)
    assert pipeline.unload_idle()
    after = _rss_mib()
    print(f"worker RSS, after tiny.en's idle unload:         {after:5d} MiB  loaded {pipeline.info().loaded_models}")
    print(f"tiny.en held {two - one} MiB; the unload gave back {two - after} MiB")


if __name__ == "__main__":
    main()
