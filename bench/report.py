"""The bench's result as a text table, and that table written into docs/benchmarks.md.

    .venv/bin/python -m bench.report bench/results/bench-….json [--docs]

The docs' table sits between two markers and is only ever written from a result file, so the
figures there are the script's, never typed by hand.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench-table:begin -->", "<!-- bench-table:end -->"
STAGE_NAMES = ("decode", "vad", "transcribe", "word_timing", "diarize", "assign")
MODEL_CALLS = ("encode", "generate", "align")
SIDES = (("whisperx", "plain_whisperx"), ("service", "service_pipeline"))


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def table(result: dict[str, Any]) -> str:
    settings, machine = result["settings"], result["machine"]
    lines = [
        f"{result['created']}  {machine['cpu']}, {machine['cores']} cores, load {machine['load_1min']} at start"
        + (f", {machine['gpu']}" if "gpu" in machine else ""),
        f"model {settings['model']} {settings['compute_type']} on {settings['device']}, {settings['threads']} threads, "
        f"batch {settings['batch_size']}, service beam {settings['beam_size']}"
        + ("  (--quick: a smoke run, not figures)" if result["quick"] else ""),
        "",
        "Per stage, seconds (whisperx = plain whisperx script, service = this service's pipeline in-process):",
        f"{'clip':<18}{'side':<10}"
        + "".join(f"{name:>12}" for name in STAGE_NAMES)
        + f"{'total':>9}{'RTF':>8}{'tr. RTF':>9}{'WER':>8}",
    ]
    for row in result["clips"]:
        for side, key in SIDES:
            figures = row[key]
            lines.append(
                f"{row['clip']:<18}{side:<10}"
                + "".join(f"{_seconds(figures['stages_s'][name]):>12}" for name in STAGE_NAMES)
                + f"{figures['total_s']:>9.2f}{figures['rtf']:>8.3f}{figures['transcription_rtf']:>9.3f}"
                + f"{figures['wer']:>8.3f}"
            )
    lines += _model_split(result["clips"])
    lines += [
        "",
        "Through the HTTP API (upload to completed), and ratios:",
        f"{'clip':<18}{'audio s':>8}{'API s':>8}{'API RTF':>9}{'API WER':>9}{'API/direct':>12}"
        f"{'transcr. service/whisperx':>27}{'worker peak MiB':>17}",
    ]
    for row in result["clips"]:
        api = row["api"]
        workers = [values["peak"] for name, values in row["service_memory_mb"].items() if name.startswith("worker")]
        lines.append(
            f"{row['clip']:<18}{row['audio_s']:>8.1f}{api['total_s']:>8.2f}{api['rtf']:>9.3f}{api['wer']:>9.3f}"
            f"{row['api_over_direct']:>12.3f}{row['transcription_ratio']:>27.3f}{max(workers, default=0):>17}"
        )
    cold, latency, in_a_row = result["cold_start"], result["status_latency"], result["tasks_in_a_row"]
    memory = result["service_memory_mb"]
    totals = [round(sum(after.values())) for after in in_a_row["workers_rss_mb"]]
    lines += [
        "",
        f"cold start: API answering {cold['api_up_s']:.2f} s, /ready {cold['ready_s']:.2f} s"
        f"  (plain whisperx load_model {result['plain_whisperx_load_s']:.2f} s)",
        f"status latency: idle p50 {latency['idle']['p50_ms']:.1f} ms p99 {latency['idle']['p99_ms']:.1f} ms; "
        f"2 tasks running p50 {latency['two_tasks']['p50_ms']:.1f} ms p99 {latency['two_tasks']['p99_ms']:.1f} ms "
        f"(p99 ratio {latency['p99_ratio']:.2f})",
        "peak RSS MiB: " + ", ".join(f"{name} {values['peak']}" for name, values in memory.items()),
        f"{in_a_row['tasks']} tasks in a row ({in_a_row['clip']}), workers' total RSS MiB after each: "
        + " ".join(str(total) for total in totals)
        + f"; growth from task 2 to the last {in_a_row['growth_mb']:+d} MiB",
    ]
    return "\n".join(lines)


def _model_split(rows: list[dict[str, Any]]) -> list[str]:
    """Seconds in the CTranslate2 model's calls per side; results written before they were timed have none."""
    if not all("model_s" in row[key] for row in rows for _, key in SIDES):
        return []
    lines = [
        "",
        "Inside transcription, seconds in the Whisper model (rest = transcribe stage outside these calls):",
        f"{'clip':<18}{'side':<10}" + "".join(f"{name:>10}" for name in MODEL_CALLS) + f"{'rest':>10}",
    ]
    for row in rows:
        for side, key in SIDES:
            model, transcribe = row[key]["model_s"], row[key]["stages_s"]["transcribe"]
            lines.append(
                f"{row['clip']:<18}{side:<10}"
                + "".join(f"{model[name]:>10.2f}" for name in MODEL_CALLS)
                + f"{transcribe - sum(model.values()):>10.2f}"
            )
    return lines


def refresh_docs(result: dict[str, Any], source: Path, docs: Path = DOCS) -> None:
    """Replace the table between the markers in docs/benchmarks.md with this result's."""
    text = docs.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{docs} has no {BEGIN} … {END} markers to write the table between")
    name = source.resolve().relative_to(ROOT) if source.resolve().is_relative_to(ROOT) else source.name
    block = f"{BEGIN}\n`python -m bench` wrote `{name}`:\n\n```\n{table(result)}\n```\n{END}"
    docs.write_text(re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.DOTALL))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("result", type=Path, help="a JSON file written by python -m bench")
    parser.add_argument("--docs", action="store_true", help=f"write the table into {DOCS.relative_to(ROOT)}")
    args = parser.parse_args()
    result = json.loads(args.result.read_text())
    print(table(result))
    if args.docs:
        refresh_docs(result, args.result)


if __name__ == "__main__":
    main()
