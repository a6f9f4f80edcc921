"""What a worker holds before its first task: resident memory after each step of loading.

    .venv/bin/python -m bench.footprint [--model base]

Prints VmRSS, and its anonymous and file-backed parts (RssAnon, RssFile: shared library code
that other workers map too), after each import and model load, in the order a worker does them.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def _resident() -> dict[str, int]:
    wanted = ("VmRSS", "RssAnon", "RssFile")
    lines = Path("/proc/self/status").read_text().splitlines()
    return {
        key: int(value.split()[0]) // 1024 for key, value in (line.split(":", 1) for line in lines) if key in wanted
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="base", help="Whisper model (default base)")
    args = parser.parse_args()
    for name, value in {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYANNOTE_METRICS_ENABLED": "false",
    }.items():
        os.environ.setdefault(name, value)

    def show(step: str) -> None:
        memory = _resident()
        print(
            f"{step:<34} RSS {memory['VmRSS']:5d} MiB  (anonymous {memory['RssAnon']:5d}, files {memory['RssFile']:4d})"
        )

    show("python")
    from app.config import Settings
    from app.pipeline.whisperx_pipeline import WhisperXPipeline

    show("app and faster-whisper imported")
    pipeline = WhisperXPipeline(Settings(_env_file=None, api_keys="footprint", whisper_model=args.model))
    show(f"Whisper {args.model} loaded")
    import torch  # noqa: F401 - imported to measure it

    show("torch imported")
    import pyannote.audio  # noqa: F401 - imported to measure it

    show("pyannote.audio imported")
    pipeline.finish_loading()
    show("diarizer loaded (worker ready)")


if __name__ == "__main__":
    main()
