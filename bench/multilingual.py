"""Word error rate per language on English-then-German recordings, with and without `multilingual`.

Builds espeak-ng clips (voice `en-us`, then `de`; sentences not used by the tests), runs the real
pipeline on each (embedded model, in this process) three ways: `multilingual=true`, the default
(one language detected for the file), and the default with the language given, whose time is the
base the others are compared with. Words are put in their language by time (a segment that starts
before the English ends is English), so a mistaken language label cannot hide errors. Also prints
each clip's detected runs and where the change was placed against where it is.

    .venv/bin/python -m bench.multilingual
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import jiwer

from app.config import Settings
from app.media import SAMPLE_RATE, decode
from app.pipeline.base import Job
from app.pipeline.languages import Run, detect_runs
from app.pipeline.whisperx_pipeline import WhisperXPipeline

CLIPS = {
    "travel": (
        "The bakery on the corner opens early every morning. Fresh bread and warm rolls are sold before "
        "sunrise. Many people stop there on their way to work. The owner has run the shop for twenty years. "
        "On Saturdays there is a long queue outside the door.",
        "Im Sommer fahren wir gern an das Meer. Die Sonne scheint und das Wasser ist warm. "
        "Die Kinder bauen eine Burg aus Sand. Am Nachmittag essen wir ein Eis.",
    ),
    "office": (
        "Please send the report to the whole team before Friday. The meeting will start at ten in the "
        "small room on the second floor. Bring your laptop and the printed charts. We need to decide on "
        "the budget for next year. Lunch will be served after the meeting.",
        "Ich arbeite jeden Tag in einem großen Büro. Mein Kollege trinkt sehr viel Tee. "
        "Wir schreiben viele Briefe und telefonieren mit unseren Kunden. Um fünf Uhr gehen wir nach Hause.",
    ),
}
SPEED = 150


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^\w' ]+", " ", text.lower()).split())


def _wer(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(_words(reference), _words(hypothesis) or "-"))


def _speak(text: str, voice: str, target: Path) -> Path:
    raw = target.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(SPEED), "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", str(target)], check=True)
    return target


def _seconds(path: Path) -> float:
    return float(subprocess.run(["soxi", "-D", str(path)], capture_output=True, text=True, check=True).stdout)


def _run(pipeline: WhisperXPipeline, path: Path, **options: Any) -> tuple[dict[str, Any], float]:
    job = Job(task_id=path.stem, audio_path=path, enable_diarization=False, **options)
    began = time.perf_counter()
    result = pipeline.run(job, lambda *_: None).result
    return result, time.perf_counter() - began


def _describe(run: Run) -> str:
    """A run's language and span, and each stretch's likeliest language with its probability."""
    found = ", ".join(
        f"{language} {stretch.probabilities[language]:.2f}"
        for stretch in run.stretches
        for language in [max(stretch.probabilities, key=stretch.probabilities.__getitem__)]
    )
    span = f"{run.stretches[0].start / SAMPLE_RATE:.1f}-{run.stretches[-1].end / SAMPLE_RATE:.1f} s"
    return f"{run.language} {span} ({found})"


def main() -> None:
    pipeline = WhisperXPipeline(Settings())
    pipeline.finish_loading()
    print(f"model {pipeline.model_name}, {pipeline.device}, batch {pipeline.batch_size}")
    header = f"{'clip':8} {'mode':14} {'WER en':>7} {'WER de':>7} {'language':>8} {'time':>6} {'x given':>7}  warning"
    rows = [header]
    with tempfile.TemporaryDirectory() as folder:
        for name, (english, german) in CLIPS.items():
            en = _speak(english, "en-us", Path(folder) / f"{name}-en.wav")
            de = _speak(german, "de", Path(folder) / f"{name}-de.wav")
            mixed = Path(folder) / f"{name}.wav"
            subprocess.run(["sox", str(en), str(de), str(mixed)], check=True)
            change = _seconds(en)
            audio = decode(mixed, 60, 3600)
            with pipeline._whisper.use(pipeline.model_name) as whisper:  # the detection step alone
                runs = detect_runs(whisper.model, audio, {}, pipeline.batch_size)
            placed = " | ".join(_describe(run) for run in runs)
            print(f"{name}: {len(audio) / SAMPLE_RATE:.1f} s, German from {change:.1f} s; runs: {placed}")
            _, given = _run(pipeline, mixed, language="en")
            for mode, options in (("multilingual", {"multilingual": True}), ("default", {})):
                result, seconds = _run(pipeline, mixed, **options)
                segments = result["segments"]
                said = {
                    part: " ".join(s["text"] for s in segments if (s["start"] < change - 0.3) == (part == "en"))
                    for part in ("en", "de")
                }
                warning = "yes" if result.get("warnings") else "no"
                rows.append(
                    f"{name:8} {mode:14} {_wer(english, said['en']):7.2f} {_wer(german, said['de']):7.2f} "
                    f"{result['language']:>8} {seconds:6.1f} {seconds / given:7.2f}  {warning}"
                )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
