"""What automatic language detection costs: paired, repeated runs on a 5-s and a 70-s clip.

The speed bench's sides (bench/speed.py), side by side in one run, in turn, `--repeat` times each:

- plain whisperx, which detects the language itself (one encoder pass over the first 30 s);
- the service's pipeline in this process with no `language`, and with `language=en`;
- the HTTP API (a real server, 2 workers, diarization on as by default) with no `language`, and with it.

For each clip it prints each side's median and range (min–max) and, pair by pair (the runs of one
round, taken one after the other), the ratios: API with no language ÷ API with `language=en`, and
pipeline with no language ÷ plain whisperx; then the calls into the CTranslate2 model (through the
speed bench's forwarding proxy): encoder calls and windows encoded, `detect_language` calls, for
the pipeline with and without `language` and for whisperx.

    .venv/bin/python -m bench.language_cost [--repeat 5] [--port 8051]
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
from typing import Any

from bench.inputs import TEXT, Clip, duration, speech
from bench.speed import (
    KEY,
    MODEL_CALLS,
    RESULTS,
    PlainWhisperX,
    Service,
    _free_port,
    _machine,
    model_timed,
    service_pipeline,
)

SIDES = ("whisperx", "pipeline auto", "pipeline en", "API auto", "API en")


def short_clip(folder: Path) -> Clip:
    """About 5 s: the passage's first two sentences."""
    text = " ".join(TEXT.split(". ")[:2]) + "."
    path = folder / "speech-5s.wav"
    raw = folder / "speech-5s.raw.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", str(path)], check=True)
    return Clip("speech-5s", path, text, duration(path))


def _one_round(clip: Clip, plain: PlainWhisperX, pipeline: Any, whisper: Any, service: Service) -> dict[str, Any]:
    """Each side once on `clip`, one after the other: seconds, and the model calls of the in-process sides."""
    seconds: dict[str, float] = {}
    calls: dict[str, dict[str, int]] = {"whisperx": {}, "pipeline auto": {}, "pipeline en": {}}
    with model_timed(plain.model.model, dict.fromkeys(MODEL_CALLS, 0.0), calls["whisperx"]):
        seconds["whisperx"] = plain.run(clip, pipeline._diarizer)["total_s"]
    for side, language in (("pipeline auto", None), ("pipeline en", "en")):
        with model_timed(whisper.model, dict.fromkeys(MODEL_CALLS, 0.0), calls[side]):
            seconds[side] = service_pipeline(clip, pipeline, language)["total_s"]
    seconds["API auto"] = service.transcribe(clip)["total_s"]
    seconds["API en"] = service.transcribe(clip, language="en")["total_s"]
    return {"seconds": seconds, "calls": calls}


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} ({min(values):.2f}–{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="rounds per clip (default 5)")
    parser.add_argument("--port", type=int, default=0, help="port for the service (default: any free one)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON result")
    args = parser.parse_args()
    offline = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYANNOTE_METRICS_ENABLED": "false"}
    for name, value in offline.items():
        os.environ.setdefault(name, value)

    from app.config import Settings
    from app.pipeline.models import resolve_whisper_model
    from app.pipeline.whisperx_pipeline import WhisperXPipeline

    env = {"WHISPER_MODEL": "base", "DEVICE": "cpu", "COMPUTE_TYPE": "int8", "CPU_THREADS": "2"}
    result: dict[str, Any] = {"created": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                              "machine": _machine("cpu"), "repeat": args.repeat, "clips": []}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-") as temp:
        folder = Path(temp)
        clips = [short_clip(folder), speech(70 / 60, folder)]
        service = Service(folder, args.port or _free_port(), env)
        try:
            settings = Settings(  # type: ignore[call-arg]
                _env_file=None, api_keys=KEY, max_concurrent_tasks=1, whisper_model="base", device="cpu",
                compute_type="int8", cpu_threads=2,
            )  # fmt: skip
            pipeline = WhisperXPipeline(settings)
            pipeline.finish_loading()
            plain = PlainWhisperX(resolve_whisper_model("base", settings), "cpu", "int8", 2, pipeline.batch_size)
            warm = clips[0]
            service_pipeline(warm, pipeline)
            plain.run(warm, pipeline._diarizer)
            service.warm_up(warm)
            for clip in clips:
                print(f"{clip.name} ({clip.seconds:.1f} s): {args.repeat} rounds…", file=sys.stderr, flush=True)
                with pipeline._whisper.use(pipeline.model_name) as whisper:
                    rounds = []
                    for _ in range(args.repeat):
                        rounds.append(_one_round(clip, plain, pipeline, whisper, service))
                        print(f"  {rounds[-1]['seconds']}", file=sys.stderr, flush=True)  # progress, and figures so far
                times = {side: [one["seconds"][side] for one in rounds] for side in SIDES}
                calls = rounds[-1]["calls"]
                pairs = {
                    "API auto / API en": [a / b for a, b in zip(times["API auto"], times["API en"], strict=True)],
                    "pipeline auto / whisperx": [
                        a / b for a, b in zip(times["pipeline auto"], times["whisperx"], strict=True)
                    ],
                    "pipeline auto / pipeline en": [
                        a / b for a, b in zip(times["pipeline auto"], times["pipeline en"], strict=True)
                    ],
                }
                result["clips"].append({"clip": clip.name, "audio_s": round(clip.seconds, 1), "seconds": times,
                                        "ratios": pairs, "model_calls": calls})  # fmt: skip
        finally:
            service.close()
    print(report(result))
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"language-cost-{time.strftime('%Y%m%d-%H%M%S')}.json"
    target.write_text(json.dumps(result, indent=2, allow_nan=False))
    print(f"wrote {target}")


def report(result: dict[str, Any]) -> str:
    machine = result["machine"]
    lines = [
        f"{result['created']}  {machine['cpu']}, {machine['cores']} cores, load {machine['load_1min']} at start; "
        f"base int8, 2 threads; {result['repeat']} rounds; seconds and ratios as median (min–max)"
    ]
    for row in result["clips"]:
        lines.append(f"\n{row['clip']} ({row['audio_s']} s of audio)")
        lines += [f"  {side:<30}{_spread(values)}" for side, values in row["seconds"].items()]
        lines += [f"  {name:<30}{_spread(values)}" for name, values in row["ratios"].items()]
        for side, counted in row["model_calls"].items():
            names = ("encode", "encoded_windows", "detect_language")
            shown = ", ".join(f"{name} {counted.get(name, 0)}" for name in names)
            lines.append(f"  model calls, {side:<17}{shown}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
