"""How right the time estimates are: what the page shows against the time that was really left.

Starts the service (embedded model, one worker), transcribes one espeak-ng dialogue so the stage
costs are measured, then follows each dialogue's events (2, 3 and 4 voices, and a meeting of
--minutes) and replays them as the web page shows them: the latest event's `eta_seconds`, counted
down until the next event, and none once it has run out. For each file it prints the error of
the estimate shown at 20, 50 and 80 % of the task's real time (shown / really left - 1: + is too
long), and the share of the time after the first fifth with an estimate shown at all.
With --real FOLDER, each audio file in it is measured as well.

    .venv/bin/python -m bench.eta [--minutes 2] [--voices 2,3,4] [--model base] [--real FOLDER] [--events]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from httpx_sse import connect_sse

from app.media import SUPPORTED_EXTENSIONS
from bench.diarization import BENCH_VOICES, LINES, dialogue, long_dialogue, write_wav
from bench.end_to_end import KEY, ROOT, _free_port

CHECKPOINTS = (0.2, 0.5, 0.8)
"""Shares of a task's real time at which the shown estimate is judged."""
TOLERANCE = 0.3
"""The target: within ±30 % of the time really left."""


@dataclass(frozen=True)
class Event:
    at: float
    """Seconds since the upload."""
    progress: float
    eta: float | None


def _follow(url: str, audio: Path) -> list[Event]:
    """Every event of one task, from upload to completion."""
    headers = {"X-API-Key": KEY}
    sent = time.perf_counter()
    with audio.open("rb") as file:
        task_id = httpx.post(
            f"{url}/api/v1/transcribe/upload", headers=headers, files={"file": file}, timeout=600
        ).json()["task_id"]
    seen = []
    with (
        httpx.Client(base_url=url, headers=headers, timeout=600) as client,
        connect_sse(client, "GET", f"/api/v1/transcribe/events/{task_id}") as source,
    ):
        for event in source.iter_sse():
            data = json.loads(event.data)
            seen.append(Event(time.perf_counter() - sent, data["progress"], data["eta_seconds"]))
    httpx.delete(f"{url}/api/v1/transcribe/task/{task_id}", headers=headers)
    return seen


def shown(events: list[Event], at: float) -> float | None:
    """The estimate the page shows at `at`: the latest event's, counted down; none once it runs out."""
    latest = [event for event in events if event.at <= at]
    if not latest or latest[-1].eta is None:
        return None
    left = latest[-1].eta - (at - latest[-1].at)
    return left if left > 0 else None


def judge(events: list[Event]) -> dict[str, object]:
    total = events[-1].at
    errors = {}
    for share in CHECKPOINTS:
        at = share * total
        estimate = shown(events, at)
        errors[f"{share:.0%}"] = None if estimate is None else round(estimate / (total - at) - 1, 2)
    # Time after the first fifth with an estimate shown, and with one within the tolerance, sampled every 0.1 s.
    samples = [0.2 * total + step * 0.1 for step in range(int(0.8 * total / 0.1))]
    estimates = [(shown(events, at), total - at) for at in samples]
    with_one = [(estimate, left) for estimate, left in estimates if estimate is not None]
    within = [1 for estimate, left in with_one if abs(estimate / left - 1) <= TOLERANCE]
    return {
        "task_seconds": round(total, 1),
        "error_at": errors,
        "shown_after_a_fifth": round(len(with_one) / len(samples), 2) if samples else None,
        "within_30_percent_when_shown": round(len(within) / len(with_one), 2) if with_one else None,
    }


def _serve(port: int, model: str, folder: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ, "API_KEYS": KEY, "PORT": str(port), "HOST": "127.0.0.1", "MAX_CONCURRENT_TASKS": "1",
        "WHISPER_MODEL": model, "UPLOAD_DIR": str(folder / "uploads"), "LOG_LEVEL": "warning",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYANNOTE_METRICS_ENABLED": "false",
        "STANDBY_WORKERS": "0",  # no standby loading beside the timed tasks
    }  # fmt: skip
    server = subprocess.Popen([sys.executable, "-m", "app.main"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            if httpx.get(f"{url}/ready", headers={"X-API-Key": KEY}).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=2.0, help="length of the meeting (0: none)")
    parser.add_argument(
        "--voices", type=lambda text: [int(n) for n in text.split(",")], default=[2, 3, 4],
        help="the dialogues, by their number of voices (default 2,3,4)",
    )  # fmt: skip
    parser.add_argument("--model", default="base", help="WHISPER_MODEL for the service")
    parser.add_argument("--real", type=Path, help="a folder of recordings to measure as well")
    parser.add_argument("--events", action="store_true", help="print each file's events too (stderr)")
    args = parser.parse_args()
    port = _free_port()
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        files = {
            f"espeak-{voices}v": folder / f"{dialogue(voices, 0.3, folder).name}.wav"
            for voices in sorted({2, *args.voices})
        }
        if args.minutes:
            meeting = long_dialogue("meeting", BENCH_VOICES[:3], args.minutes, LINES, folder)
            write_wav(folder / "meeting.wav", meeting.audio)
            files[f"espeak-meeting-{args.minutes:g}min"] = folder / "meeting.wav"
        if args.real:
            # Audio only: a folder such as tests/data/real also holds the references (RTTM, STM, JSON).
            files |= {
                path.name: path
                for path in sorted(args.real.iterdir())
                if path.suffix.lower().lstrip(".") in SUPPORTED_EXTENSIONS
            }
        server = _serve(port, args.model, folder)
        try:
            url = f"http://127.0.0.1:{port}"
            _follow(url, files["espeak-2v"])  # the stage costs are measured on this one
            report = {}
            for name, path in files.items():
                events = _follow(url, path)
                report[name] = judge(events)
                print(name, json.dumps(report[name]), file=sys.stderr)
                if args.events:
                    print(json.dumps([[round(e.at, 2), e.progress, e.eta] for e in events]), file=sys.stderr)
        finally:
            server.terminate()
            server.wait(30)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
