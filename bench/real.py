"""The service's pipeline on real recordings: speaker count, DER, WER, cpWER and speaker flips per file.

The recordings, their licences, sources, hashes, transcripts and turns are listed in
tests/data/real/manifest.json, split into a `tuning` half (what the diarizer may be tuned on) and a
`held-out` half (acceptance only). Each file goes through `WhisperXPipeline.run` as a task would,
with no language and no speaker hint: the embedded `base` model and the embedded diarizer.

Per file:
- speakers: true / found (distinct labels on the transcript's words);
- DER at collar 0 and ±0.25 s, of the transcript's one-speaker pieces against the reference turns
  (files with an RTTM), pyannote.metrics, overlaps scored;
- WER against the reference transcript (files whose transcript has one order: one speaker, or STM times);
- cpWER: each found speaker's words against one reference speaker's, in the assignment with the
  fewest errors (Hungarian, scipy), errors over all reference words; an extra found speaker's words
  all count as insertions, a reference speaker left without one as deletions;
- flips: runs of one or two words labelled another speaker than the words either side of them (which
  share one), where the reference says the same person spoke the run and its neighbours;
- seconds: the pipeline's wall time for the file.

Run from the repository root:
    python -m bench.real [--split tuning|held-out|all] [--threads 2] [--only ID,ID]
    python -m bench.real --compare bench/results/real-BEFORE.json bench/results/real-AFTER.json
The first writes JSON under bench/results/; the second prints the before/after table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "real"
RESULTS = ROOT / "bench" / "results"
MAX_FLIP_WORDS = 2
# Hesitations and backchannel sounds the references spell in different ways (AMI writes them, Whisper mostly not).
FILLERS = frozenset({"um", "uh", "mm", "hmm", "mhm", "mm-hmm", "uh-huh", "huh", "ah", "oh", "er", "erm"})


@dataclass(frozen=True)
class Recording:
    id: str
    split: str
    speakers: int
    seconds: float
    path: Path
    rttm: Path | None
    transcript: dict[str, str] | None
    ordered_text: str | None
    """The whole transcript in spoken order, where it has one (one speaker, or an STM's times)."""


@dataclass
class Row:
    id: str
    split: str
    seconds: float
    speakers_true: int
    speakers_found: int
    der_collar0: float | None
    der_collar_025: float | None
    wer: float | None
    cpwer: float | None
    flips: int
    words: int
    wall_s: float


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"{package} is not installed; run scripts/setup")
    return Path(spec.origin).parent


def _resolve(name: str) -> Path:
    """A manifest path: a file beside the manifest, or `package:pkg.name/rel/path` inside an installed package."""
    if not name.startswith("package:"):
        return DATA / name
    package, _, relative = name.removeprefix("package:").partition("/")
    return _package_dir(package) / relative


def recordings(split: str = "all", only: Sequence[str] = ()) -> list[Recording]:
    """The manifest's recordings of one split (or all), optionally only the given ids."""
    manifest = json.loads((DATA / "manifest.json").read_text())
    chosen = []
    for entry in manifest["recordings"]:
        if (split != "all" and entry["split"] != split) or (only and entry["id"] not in only):
            continue
        rttm = _resolve(entry["rttm"]) if entry["rttm"] else None
        transcript = entry["transcript"]
        ordered = None
        if transcript is not None and len(transcript) == 1:
            ordered = next(iter(transcript.values()))
        elif rttm is not None and rttm.with_suffix(".stm").exists():
            ordered = " ".join(line.split(maxsplit=5)[5] for line in rttm.with_suffix(".stm").read_text().splitlines())
        chosen.append(
            Recording(
                entry["id"], entry["split"], entry["speakers"], entry["seconds"], _resolve(entry["file"]), rttm,
                transcript, ordered,
            )
        )  # fmt: skip
    return chosen


def normalise(text: str) -> list[str]:
    """Lower case, no punctuation (apostrophes and inner hyphens kept), AMI's `L_C_D_` as `lcd`, no fillers."""
    text = text.lower().replace("_", "")
    words = re.sub(r"[^a-z0-9'\- ]+", " ", text).split()
    return [word.strip("-'") for word in words if word.strip("-'") and word.strip("-'") not in FILLERS]


def _errors(reference: list[str], hypothesis: list[str]) -> int:
    """Substitutions + deletions + insertions turning `hypothesis` into `reference`."""
    if not reference or not hypothesis:
        return len(reference) + len(hypothesis)
    import jiwer

    out = jiwer.process_words(" ".join(reference), " ".join(hypothesis))
    return int(out.substitutions + out.deletions + out.insertions)


def word_error_rate(reference: str, hypothesis: str) -> float:
    ref = normalise(reference)
    return _errors(ref, normalise(hypothesis)) / max(len(ref), 1)


def cpwer(reference: dict[str, str], hypothesis: dict[str, str]) -> float:
    """Concatenated minimum-permutation WER: speakers paired one to one (padded with empty speakers)
    so that the errors summed over the pairs are fewest, divided by the reference's word count."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment  # type: ignore[import-untyped]

    refs = [normalise(text) for text in reference.values()]
    hyps = [normalise(text) for text in hypothesis.values()]
    size = max(len(refs), len(hyps))
    refs += [[]] * (size - len(refs))
    hyps += [[]] * (size - len(hyps))
    cost = np.array([[_errors(ref, hyp) for hyp in hyps] for ref in refs])
    rows, columns = linear_sum_assignment(cost)
    return float(cost[rows, columns].sum()) / max(sum(len(ref) for ref in refs), 1)


def _words(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [word for segment in result["segments"] for word in segment["words"]]


def _reference_speaker(reference: Any, start: float | None, end: float | None) -> str | None:
    """The reference speaker who speaks most of [start, end]; None where nobody does."""
    from pyannote.core import Segment

    if start is None or end is None:
        return None
    cropped = reference.crop(Segment(start, max(end, start + 0.01)))
    durations = {label: cropped.label_duration(label) for label in cropped.labels()}
    return max(durations, key=lambda label: durations[label]) if durations else None


def flips(words: list[dict[str, Any]], reference: Any | None = None) -> int:
    """Runs of at most MAX_FLIP_WORDS words on another speaker than the (equal) words either side.

    With a reference (pyannote Annotation), a run counts only where the reference speaker of the
    run is the neighbours' one: a real backchannel inside a turn is not a flip.
    """
    labels = [word.get("speaker") for word in words]
    runs: list[tuple[int, int]] = []  # (first index, end index) of each run of one label
    for index, label in enumerate(labels):
        if runs and labels[runs[-1][0]] == label:
            runs[-1] = (runs[-1][0], index + 1)
        else:
            runs.append((index, index + 1))
    count = 0
    for (before, _), (first, end), (after, _) in zip(runs, runs[1:], runs[2:], strict=False):
        if end - first > MAX_FLIP_WORDS or labels[before] != labels[after]:
            continue
        if reference is not None:
            inside = _reference_speaker(reference, words[first].get("start"), words[end - 1].get("end"))
            left = _reference_speaker(reference, words[first - 1].get("start"), words[first - 1].get("end"))
            right = _reference_speaker(reference, words[after].get("start"), words[after].get("end"))
            if inside is None or not inside == left == right:
                continue
        count += 1
    return count


def _hypothesis(result: dict[str, Any], uri: str) -> Any:
    from pyannote.core import Annotation, Segment

    annotation = Annotation(uri=uri)
    for index, segment in enumerate(result["segments"]):
        if segment["speaker"] is not None and segment["end"] > segment["start"]:
            annotation[Segment(segment["start"], segment["end"]), index] = segment["speaker"]
    return annotation


def score(recording: Recording, result: dict[str, Any], wall_s: float) -> Row:
    """The figures for one recording from the pipeline's result."""
    from pyannote.core import Segment, Timeline
    from pyannote.database.util import load_rttm
    from pyannote.metrics.diarization import DiarizationErrorRate

    words = _words(result)
    found = {word["speaker"] for word in words if word.get("speaker") is not None}
    reference = next(iter(load_rttm(recording.rttm).values())) if recording.rttm else None  # type: ignore[no-untyped-call]
    der0 = der25 = None
    if reference is not None:
        hypothesis = _hypothesis(result, recording.id)
        whole = Timeline([Segment(0, recording.seconds)])
        der0 = 100 * DiarizationErrorRate(collar=0.0, skip_overlap=False)(reference, hypothesis, uem=whole)
        der25 = 100 * DiarizationErrorRate(collar=0.5, skip_overlap=False)(reference, hypothesis, uem=whole)
    text = " ".join(word["word"] for word in words)
    by_speaker: dict[str, list[str]] = {}
    for word in words:
        by_speaker.setdefault(str(word.get("speaker")), []).append(word["word"])
    return Row(
        id=recording.id,
        split=recording.split,
        seconds=recording.seconds,
        speakers_true=recording.speakers,
        speakers_found=len(found),
        der_collar0=None if der0 is None else round(der0, 1),
        der_collar_025=None if der25 is None else round(der25, 1),
        wer=None if recording.ordered_text is None else round(word_error_rate(recording.ordered_text, text), 3),
        cpwer=None
        if recording.transcript is None
        else round(cpwer(recording.transcript, {k: " ".join(v) for k, v in by_speaker.items()}), 3),
        flips=flips(words, reference),
        words=len(words),
        wall_s=round(wall_s, 2),
    )


def run(pipeline: Any, recording: Recording) -> tuple[dict[str, Any], float]:
    """The pipeline's result for one recording, as a task with no options would get it, and its wall time."""
    from app.pipeline.base import Job

    started = time.perf_counter()
    output = pipeline.run(Job(task_id=recording.id, audio_path=recording.path), lambda *_: None)
    return output.result, time.perf_counter() - started


def load_pipeline(threads: int, device: str = "cpu") -> Any:
    from app.config import Settings
    from app.pipeline.whisperx_pipeline import WhisperXPipeline

    settings = Settings(
        _env_file=None, api_keys="bench", max_concurrent_tasks=1, whisper_model="base", device=device,
        compute_type="int8", cpu_threads=threads, model_cache_dir=Path(tempfile.mkdtemp(prefix="bench-real-")),
    )  # fmt: skip
    pipeline = WhisperXPipeline(settings)
    pipeline.finish_loading()
    return pipeline


def _cell(value: float | int | None, digits: int = 1) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'recording':<20}{'split':<9}{'dur s':>6}{'spk':>6}{'DER c0':>8}{'DER ±.25':>9}{'WER':>7}{'cpWER':>7}"
        f"{'flips':>6}{'wall s':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.id:<20}{r.split:<9}{r.seconds:>6.1f}{f'{r.speakers_true}/{r.speakers_found}':>6}"
            f"{_cell(r.der_collar0):>8}{_cell(r.der_collar_025):>9}{_cell(r.wer, 3):>7}{_cell(r.cpwer, 3):>7}"
            f"{r.flips:>6}{r.wall_s:>8.1f}"
        )


def compare(before_path: Path, after_path: Path) -> str:
    """A Markdown table of two runs side by side, held-out recordings marked."""
    before = {row["id"]: row for row in json.loads(before_path.read_text())["rows"]}
    after = {row["id"]: row for row in json.loads(after_path.read_text())["rows"]}
    lines = [
        "| recording | half | s | speakers true: before → after | DER c0 % | DER ±0.25 s % | WER | cpWER | flips |",
        "|---|---|---:|---|---|---|---|---|---|",
    ]

    def pair(key: str, digits: int = 1) -> str:
        return f"{_cell(b.get(key), digits)} → {_cell(a.get(key), digits)}"

    for key, a in after.items():
        b = before.get(key, {})
        half = "**held-out**" if a["split"] == "held-out" else "tuning"
        lines.append(
            f"| {key} | {half} | {a['seconds']:.0f} | {a['speakers_true']}: {b.get('speakers_found', '–')} → "
            f"{a['speakers_found']} | {pair('der_collar0')} | {pair('der_collar_025')} | {pair('wer', 3)} | "
            f"{pair('cpwer', 3)} | {pair('flips', 0)} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="all", choices=["tuning", "held-out", "all"])
    parser.add_argument("--only", default="", help="comma-separated recording ids")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for inference")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--label", default="", help="a word for the result file's name (e.g. before, after)")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"), help="print a before/after table")
    args = parser.parse_args(argv)
    if args.compare:
        print(compare(*args.compare))
        return
    offline = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYANNOTE_METRICS_ENABLED": "false"}
    for name, value in offline.items():
        os.environ.setdefault(name, value)
    chosen = recordings(args.split, [name for name in args.only.split(",") if name])
    pipeline = load_pipeline(args.threads, args.device)
    # One-off costs (first calls, lazy set-up) kept out of the figures: a first run on 5 s of speech.
    with tempfile.TemporaryDirectory(prefix="bench-real-") as folder:
        warm_up = Path(folder) / "warm-up.wav"
        subprocess.run(["ffmpeg", "-v", "error", "-t", "5", "-i", str(chosen[0].path), str(warm_up)], check=True)
        run(pipeline, replace(chosen[0], path=warm_up))
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = f"-{args.label}" if args.label else ""
    target = RESULTS / f"real-{time.strftime('%Y%m%d-%H%M%S')}{suffix}.json"
    report: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "threads": args.threads,
        "load_1min_at_start": round(os.getloadavg()[0], 2),
        "rows": [],
        "words": {},  # each file's labelled words, to see what went wrong where
    }
    for recording in chosen:
        print(f"{recording.id}…", file=sys.stderr, flush=True)
        result, wall_s = run(pipeline, recording)
        report["rows"].append(asdict(score(recording, result, wall_s)))
        report["words"][recording.id] = [[w["word"], w["start"], w["end"], w["speaker"]] for w in _words(result)]
        target.write_text(json.dumps(report, indent=2, allow_nan=False))  # after each file: a long run can be read
    print_table([Row(**row) for row in report["rows"]])
    print(f"wrote {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
