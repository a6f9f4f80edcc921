"""`python -m bench --quick` runs end to end and writes a well-formed result file.

Only the shape of the result is checked, never a speed: the machine's load decides those.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import report
from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.real

STAGES = {"decode", "vad", "transcribe", "word_timing", "diarize", "assign"}
MODEL_CALLS = {"encode", "generate", "align"}


def _numbers(value: Any) -> list[float]:
    if isinstance(value, dict):
        return [number for item in value.values() for number in _numbers(item)]
    if isinstance(value, list):
        return [number for item in value for number in _numbers(item)]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [float(value)]
    return []


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    out = tmp_path_factory.mktemp("bench-results")
    command = [sys.executable, "-m", "bench", "--quick", "--tasks-in-a-row", "2", "--port", str(free_port())]
    completed = subprocess.run(
        [*command, "--out", str(out)], cwd=ROOT, env=os.environ, capture_output=True, text=True, timeout=1200
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    (path,) = out.glob("bench-*-quick.json")
    return path, json.loads(path.read_text()), completed.stdout


def test_quick_bench_writes_a_well_formed_result(quick_result: tuple[Path, dict[str, Any], str]) -> None:
    _, result, _ = quick_result
    assert result["quick"] is True
    assert result["settings"]["model"] == "tiny.en"
    assert all(math.isfinite(number) for number in _numbers(result))
    (row,) = result["clips"]
    assert row["audio_s"] > 10
    for side in ("plain_whisperx", "service_pipeline"):
        figures = row[side]
        assert set(figures["stages_s"]) == STAGES
        assert figures["stages_s"]["transcribe"] > 0
        assert figures["stages_s"]["vad"] > 0
        assert figures["total_s"] > 0
        assert figures["rtf"] > 0
        assert 0 <= figures["wer"] < 0.5, "the bench's clip is clear speech: a high WER means a broken transcript"
        model = figures["model_s"]
        assert set(model) == MODEL_CALLS
        assert model["encode"] > 0, "the proxy saw no call into the Whisper model's encoder"
        assert model["generate"] > 0, "the proxy saw no call into the Whisper model's decoder"
        assert sum(model.values()) <= figures["stages_s"]["transcribe"]
    assert row["service_pipeline"]["word_times"] is True
    # Word timestamps come from faster-whisper's alignment pass on the service's side only.
    assert row["service_pipeline"]["model_s"]["align"] > 0
    assert row["plain_whisperx"]["model_s"]["align"] == 0
    assert row["api"]["total_s"] > 0
    assert 0 <= row["api"]["wer"] < 0.5
    assert row["api_over_direct"] > 0
    assert row["transcription_ratio"] > 0
    assert {"api", "worker-0", "worker-1"} <= set(row["service_memory_mb"])
    assert 0 < result["cold_start"]["api_up_s"] <= result["cold_start"]["ready_s"]
    latency = result["status_latency"]
    for case in ("idle", "two_tasks"):
        assert 0 < latency[case]["p50_ms"] <= latency[case]["p99_ms"]
    in_a_row = result["tasks_in_a_row"]
    assert in_a_row["tasks"] == len(in_a_row["workers_rss_mb"]) == 2


def test_report_renders_the_result_and_writes_it_between_the_docs_markers(
    quick_result: tuple[Path, dict[str, Any], str], tmp_path: Path
) -> None:
    path, result, stdout = quick_result
    rendered = report.table(result)
    assert rendered in stdout
    docs = tmp_path / "benchmarks.md"
    docs.write_text(f"# Benchmarks\n\nbefore\n\n{report.BEGIN}\nold table\n{report.END}\n\nafter\n")
    report.refresh_docs(result, path, docs)
    text = docs.read_text()
    assert "old table" not in text
    assert rendered in text
    assert text.startswith("# Benchmarks\n\nbefore\n")
    assert text.endswith("after\n")


def test_footprint_prints_each_loading_step_with_growing_memory() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "bench.footprint", "--model", "tiny.en"], cwd=ROOT, capture_output=True, text=True,
        timeout=300, check=True,
    ).stdout  # fmt: skip
    steps = [line for line in printed.splitlines() if " RSS " in line]
    assert [line.split(" RSS ")[0].strip() for line in steps] == [
        "python", "app and faster-whisper imported", "Whisper tiny.en loaded", "torch imported",
        "pyannote.audio imported", "diarizer loaded (worker ready)",
    ]  # fmt: skip
    resident = [int(line.split(" RSS ")[1].split()[0]) for line in steps]
    # Each step loads something, so a worker ready to work holds more than the bare interpreter.
    assert resident[-1] > resident[0]
