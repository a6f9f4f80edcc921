"""Live transcription figures: a two-voice dialogue streamed at real-time pace to /v1/realtime.

Starts the service as a real process (LIVE_MODEL as given, MAX_CONCURRENT_TASKS=1), generates an
espeak-ng dialogue of two voices the speaker encoder tells apart (a second of silence between
turns), and streams it in 100-ms appends at the pace it would be spoken, from 1 up to --sessions
sessions at once. It prints, per model and number of sessions:

- final latency: from each turn's end in the stream to its `.completed` event (p50, p95, seconds);
- partial interval: between successive partial deltas while a turn is spoken (median, p95), and
  from a turn's start to its first delta;
- live WER (the finals joined) and batch WER (the same file through /v1/audio/transcriptions on
  the same model), both against the words spoken;
- speakers right: turns whose label is the one most of that voice's turns got;
- CPU per session: CPU seconds of the whole service (API and workers) per second of audio per session;
- sessions held: the most sessions at once whose p95 final latency stayed at or under 2 s.

    .venv/bin/python -m bench.live [--models tiny.en,base] [--sessions 3] [--repeats 2]

Run it on an otherwise idle machine: the figures are CPU-bound (taskset -c 0,1 for 2 cores).
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import jiwer
import numpy as np
from scipy.signal import resample_poly
from websockets.sync.client import connect

from bench.diarization import make_dialogue, write_wav
from bench.end_to_end import ROOT, _free_port

KEY = "bench-key"
LINES = [
    ("michael", "Has the delivery from the paper mill arrived yet?"),
    ("f4", "It came this morning, but two boxes were damaged."),
    ("michael", "Thank you. Please ask for a refund rather than new boxes."),
    ("f4", "Then I will order the rest from the shop next door."),
    ("michael", "Good, and tell them we need the invoice by Friday."),
    ("f4", "I will write to them this afternoon and call if they do not answer."),
]
CHUNK_SECONDS = 0.1


def _normalise(text: str) -> str:
    return " ".join("".join(c if c.isalnum() or c in " '" else " " for c in text.lower()).split())


def _wer(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(_normalise(reference), _normalise(hypothesis)))


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def _cpu_seconds(pid: int) -> float:
    """CPU time of a process and its children, alive and reaped."""
    total = 0.0
    for process in [pid, *(int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]:
        fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        total += sum(int(value) for value in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def _session(url: str, pcm: bytes, record: dict[str, Any]) -> None:
    """One session streaming `pcm` (24 kHz) at real-time pace; events with their stream-clock times."""
    events: list[tuple[float, dict[str, Any]]] = []
    step = round(CHUNK_SECONDS * 24000) * 2
    address = url.replace("http://", "ws://", 1)
    with connect(f"{address}/v1/realtime?intent=transcription", additional_headers={"X-API-Key": KEY}) as ws:
        ws.send(json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
            "transcription": {"language": "en"}}}}}))  # fmt: skip
        started = time.perf_counter()

        def send() -> None:
            for index, start in enumerate(range(0, len(pcm), step)):
                time.sleep(max(0.0, started + index * CHUNK_SECONDS - time.perf_counter()))
                chunk = base64.b64encode(pcm[start : start + step]).decode()
                ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
            ws.send(json.dumps({"type": "input_audio_buffer.clear"}))

        threading.Thread(target=send, daemon=True).start()
        while True:
            event = json.loads(ws.recv(timeout=600))
            events.append((time.perf_counter() - started, event))
            if event["type"] in ("input_audio_buffer.cleared", "error"):
                break
    record["events"] = events


def _measure(url: str, pcm: bytes, turns: list[tuple[float, float, str, str]], sessions: int) -> dict[str, Any]:
    records: list[dict[str, Any]] = [{} for _ in range(sessions)]
    threads = [threading.Thread(target=_session, args=(url, pcm, record)) for record in records]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies, gaps, firsts, wers, right = [], [], [], [], []
    spoken = " ".join(text for _, _, _, text in turns)
    for record in records:
        events = record["events"]
        finals = [(t, e) for t, e in events if e["type"].endswith("transcription.completed")]
        if len(finals) != len(turns):
            print(f"  a session heard {len(finals)} turns, not {len(turns)}", file=sys.stderr)
        for (t, _), (_, end, _, _) in zip(finals, turns, strict=False):
            latencies.append(t - end)
        wers.append(_wer(spoken, " ".join(e["transcript"] for _, e in finals)))
        for start, end, _, _ in turns:
            deltas = [t for t, e in events if e["type"].endswith(".delta") and start <= t <= end + 2]
            gaps += [b - a for a, b in itertools.pairwise(deltas)]
            firsts += [deltas[0] - start] if deltas else []
        labels = [e.get("speaker") for _, e in finals]
        voices = [voice for _, _, voice, _ in turns][: len(labels)]
        majority = {v: Counter(lab for lab, w in zip(labels, voices, strict=True) if w == v).most_common(1)[0][0]
                    for v in set(voices)}  # fmt: skip
        right.append(sum(majority[v] == lab for lab, v in zip(labels, voices, strict=True)) / max(1, len(labels)))
    return {
        "final_latency_p50": _percentile(latencies, 50), "final_latency_p95": _percentile(latencies, 95),
        "partial_interval_median": _percentile(gaps, 50), "partial_interval_p95": _percentile(gaps, 95),
        "first_partial_median": _percentile(firsts, 50),
        "live_wer": round(statistics.mean(wers), 3), "speakers_right": round(statistics.mean(right), 3),
    }  # fmt: skip


def _serve(model: str, sessions: int, folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {
        **os.environ, "API_KEYS": KEY, "PORT": str(port), "HOST": "127.0.0.1", "MAX_CONCURRENT_TASKS": "1",
        "WHISPER_MODEL": model, "LIVE_MODEL": model, "MAX_LIVE_SESSIONS": str(sessions),
        "MAX_LIVE_SESSIONS_PER_KEY": str(sessions), "UPLOAD_DIR": str(folder / "uploads"), "LOG_LEVEL": "warning",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYANNOTE_METRICS_ENABLED": "false",
        "STANDBY_WORKERS": "0",
    }  # fmt: skip
    server = subprocess.Popen([sys.executable, "-m", "app.main"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            if httpx.get(f"{url}/health", headers={"X-API-Key": KEY}).json()["model_loaded"]:
                return server, url
        except httpx.TransportError:
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny.en,base", help="comma-separated LIVE_MODELs to measure")
    parser.add_argument("--sessions", type=int, default=3, help="most sessions at once to try")
    parser.add_argument("--repeats", type=int, default=1, help="times the dialogue is spoken per session")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-live-") as temp:
        folder = Path(temp)
        case = make_dialogue("live", LINES * args.repeats, 1.0, folder)
        audio = np.concatenate([case.audio, np.zeros(16000, dtype=np.float32)])
        write_wav(folder / "live.wav", audio)
        pcm = (np.clip(resample_poly(audio, 3, 2), -1, 1) * 32767).astype("<i2").tobytes()
        reference: Any = case.reference
        texts = iter([text for _, text in LINES * args.repeats])
        turns = [(seg.start, seg.end, voice, next(texts)) for seg, _, voice in reference.itertracks(yield_label=True)]
        seconds = len(audio) / 16000
        for model in args.models.split(","):
            server, url = _serve(model, args.sessions, folder)
            try:
                with (folder / "live.wav").open("rb") as file:
                    batch = httpx.post(
                        f"{url}/v1/audio/transcriptions", headers={"X-API-Key": KEY}, timeout=600,
                        files={"file": file}, data={"model": model, "language": "en"},
                    ).json()["text"]  # fmt: skip
                _session(url, pcm[: 24000 * 2 * 4], {})  # loads the live worker's models
                held = 0
                for sessions in range(1, args.sessions + 1):
                    cpu = _cpu_seconds(server.pid)
                    figures = _measure(url, pcm, turns, sessions)
                    cpu_per_session = (_cpu_seconds(server.pid) - cpu) / seconds / sessions
                    spoken = " ".join(text for *_, text in turns)
                    figures |= {
                        "batch_wer": round(_wer(spoken, batch), 3),
                        "cpu_per_session": round(cpu_per_session, 3),
                    }
                    print(json.dumps({"model": model, "sessions": sessions, "audio_seconds": round(seconds, 1),
                                      **figures}), flush=True)  # fmt: skip
                    if figures["final_latency_p95"] is not None and figures["final_latency_p95"] <= 2.0:
                        held = sessions
                print(json.dumps({"model": model, "sessions_held_at_p95_2s": held}), flush=True)
            finally:
                server.terminate()
                server.wait(30)


if __name__ == "__main__":
    main()
