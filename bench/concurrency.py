"""MAX_CONCURRENT_TASKS on this machine: throughput and memory with 1 worker process against 2.

For each setting it starts the service as a real process (embedded `base` unless --model says
otherwise), runs one task per worker to warm them, then submits --clips short espeak-ng clips at
once through the HTTP API and waits for all of them. Throughput is audio seconds transcribed per
wall-clock second; memory is what the host gives the service: the API process and every process
under it (its workers), summed at each 0.25 s sample, as resident (RSS) and proportional (PSS, which
counts a page shared by n processes as 1/n in each) set; the peak of each sum is printed. On a
shared machine the wall clock also depends on the share of the CPU the workers win from other jobs,
so audio seconds per CPU second of the service's processes (user + system) are printed too, with the
machine's load average.
Settings run in the order 1, 2, 2, 1 with --rounds 2, so a drift in the machine's load falls on both.

    .venv/bin/python -m bench.concurrency [--clips 4] [--seconds 30] [--rounds 1] [--model base]

Settings in the environment reach the service: CPU_THREADS=1 runs every worker on one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

from bench.inputs import Clip, speech
from bench.speed import Service


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _tree(pid: int) -> list[int]:
    """`pid` and every process under it."""
    found = [pid]
    for parent in found:
        try:
            found += [int(child) for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split()]
        except FileNotFoundError:  # it ended between two reads
            continue
    return found


def _cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time the processes have used so far."""
    total = 0
    for pid in pids:
        # Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _rss_and_pss_mb(pid: int) -> tuple[float, float]:
    fields = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            name, value = line.split(":", 1)
            fields[name] = int(value.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        return 0.0, 0.0
    return fields.get("Rss", 0) / 1024, fields.get("Pss", 0) / 1024


class MemorySampler:
    """Sums RSS and PSS over a process tree every `interval` seconds in a thread; keeps the peaks."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.peak_rss = self.peak_pss = 0.0
        self._pid, self._interval = pid, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            sizes = [_rss_and_pss_mb(pid) for pid in _tree(self._pid)]
            self.peak_rss = max(self.peak_rss, sum(rss for rss, _ in sizes))
            self.peak_pss = max(self.peak_pss, sum(pss for _, pss in sizes))
            self._stop.wait(self._interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def measure(workers: int, clips: list[Clip], model: str, folder: Path) -> dict[str, float]:
    service = Service(folder / f"run-{workers}-{time.monotonic_ns()}", _free_port(), {"WHISPER_MODEL": model}, workers)
    try:
        for task_id in [service.submit(clips[0]) for _ in range(workers)]:
            service.follow(task_id)
        processes = _tree(service.process.pid)
        load_before = os.getloadavg()[0]
        with MemorySampler(service.process.pid) as memory:
            started, cpu_before = time.perf_counter(), _cpu_seconds(processes)
            task_ids = [service.submit(clip) for clip in clips]
            ends = [service.follow(task_id) for task_id in task_ids]
            wall, cpu = time.perf_counter() - started, _cpu_seconds(processes) - cpu_before
        failed = [task for task, end in zip(task_ids, ends, strict=True) if end is None or end.event != "completed"]
        if failed:
            raise RuntimeError(f"with {workers} workers, tasks did not complete: {failed}")
    finally:
        service.close()
    audio = sum(clip.seconds for clip in clips)
    return {
        "workers": workers,
        "wall_s": round(wall, 2),
        "audio_s_per_s": round(audio / wall, 3),
        "audio_s_per_cpu_s": round(audio / cpu, 3),
        "machine_load": round((load_before + os.getloadavg()[0]) / 2, 1),
        "peak_rss_mb": round(memory.peak_rss),
        "peak_pss_mb": round(memory.peak_pss),
    }


SUMMED = ("audio_s_per_s", "audio_s_per_cpu_s", "peak_rss_mb", "peak_pss_mb")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=4, help="clips submitted at once")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each clip")
    parser.add_argument("--rounds", type=int, default=1, help="1: workers 1 then 2; 2: 1, 2, 2, 1")
    parser.add_argument("--model", default="base", help="WHISPER_MODEL for the service")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        clip = speech(args.seconds / 60, folder)
        clips = [clip] * args.clips
        order = [1, 2, 2, 1][: 2 * args.rounds] if args.rounds <= 2 else [1, 2] * args.rounds
        rows = []
        for workers in order:
            rows.append(measure(workers, clips, args.model, folder))
            print(json.dumps(rows[-1]), flush=True)

    by_workers = {n: [row for row in rows if row["workers"] == n] for n in (1, 2)}
    mean = {n: {key: sum(row[key] for row in found) / len(found) for key in SUMMED} for n, found in by_workers.items()}
    print(
        f"{args.clips} clips of {clip.seconds:.0f} s, model {args.model}: "
        + "; ".join(
            f"{n} worker{'s' * (n > 1)} {mean[n]['audio_s_per_s']:.3f} audio s/s "
            f"({mean[n]['audio_s_per_cpu_s']:.3f} per CPU s) at {mean[n]['peak_pss_mb']:.0f} MB PSS "
            f"({mean[n]['peak_rss_mb']:.0f} MB RSS)"
            for n in (1, 2)
        )
        + f"; 2 ÷ 1: throughput ×{mean[2]['audio_s_per_s'] / mean[1]['audio_s_per_s']:.2f}, "
        f"per CPU s ×{mean[2]['audio_s_per_cpu_s'] / mean[1]['audio_s_per_cpu_s']:.2f}, "
        f"memory ×{mean[2]['peak_pss_mb'] / mean[1]['peak_pss_mb']:.2f}"
    )


if __name__ == "__main__":
    main()
