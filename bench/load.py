"""Load check: N concurrent uploads against a running server; every one must be accepted (202)
or refused with 503 and Retry-After, and every accepted one must complete. Nothing lost.

Run from the repository root against a server on loopback, ideally with a small MAX_QUEUE_SIZE:
    python -m bench.load --url http://127.0.0.1:8100 --key KEY --n 50 [--file audio.wav]
Without --file it uploads a 1 s tone made with ffmpeg. Prints the figures; exits 1 when an
upload got any other answer, or an accepted task was lost or did not complete in --timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx


def _tone(folder: Path) -> bytes:
    target = folder / "tone.wav"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "sine=duration=1", str(target)],
        check=True,
    )
    return target.read_bytes()


async def _upload(client: httpx.AsyncClient, audio: bytes, answers: list[tuple[int, str | None, float]]) -> str | None:
    started = time.monotonic()
    response = await client.post("/api/v1/transcribe/upload", files={"file": ("load.wav", audio)})
    answers.append((response.status_code, response.headers.get("retry-after"), time.monotonic() - started))
    return str(response.json()["task_id"]) if response.status_code == 202 else None


async def _outcome(client: httpx.AsyncClient, task_id: str, deadline: float) -> str:
    while time.monotonic() < deadline:
        response = await client.get(f"/api/v1/transcribe/status/{task_id}")
        if response.status_code == 404:
            return "lost"
        if (status := response.json()["status"]) in ("completed", "failed"):
            return str(status)
        await asyncio.sleep(0.2)
    return "unfinished"


async def run(url: str, key: str, n: int, audio: bytes, timeout: float) -> bool:
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}, timeout=60, limits=limits) as client:
        answers: list[tuple[int, str | None, float]] = []
        began = time.monotonic()
        ids = await asyncio.gather(*(_upload(client, audio, answers) for _ in range(n)))
        uploaded = time.monotonic() - began
        accepted = [task_id for task_id in ids if task_id is not None]
        outcomes = Counter(
            await asyncio.gather(*(_outcome(client, task_id, time.monotonic() + timeout) for task_id in accepted))
        )
        finished = time.monotonic() - began

    codes = Counter(code for code, _, _ in answers)
    refused_well = sum(1 for code, retry, _ in answers if code == 503 and retry is not None)
    latencies = sorted(seconds for _, _, seconds in answers)
    other = n - codes[202] - refused_well
    print(f"uploads sent concurrently      {n}")
    print(f"accepted (202)                 {codes[202]}")
    print(f"refused (503 + Retry-After)    {refused_well}")
    print(f"other answers                  {other}  {dict(codes)}")
    print(f"completed                      {outcomes['completed']}")
    print(f"failed                         {outcomes['failed']}")
    print(f"lost (404) / unfinished        {outcomes['lost']} / {outcomes['unfinished']}")
    print(f"upload answer p50 / max       {statistics.median(latencies):6.3f} s / {latencies[-1]:.3f} s")
    print(f"all uploads answered after     {uploaded:6.2f} s; all accepted tasks ended after {finished:.2f} s")
    return other == 0 and outcomes["completed"] == len(accepted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8100")
    parser.add_argument("--key", required=True)
    parser.add_argument("--n", type=int, default=50, help="concurrent uploads (default 50)")
    parser.add_argument("--file", type=Path, help="audio to upload (default: a 1 s tone)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for accepted tasks")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        audio = args.file.read_bytes() if args.file else _tone(Path(folder))
    ok = asyncio.run(run(args.url, args.key, args.n, audio, args.timeout))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
