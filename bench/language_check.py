"""The check for a second language, measured: each window's language probabilities and the warning.

With no `language` given, the pipeline reads each transcribed window's language probabilities from
the encoder output the transcription computes anyway (app/pipeline/batched.py) and warns when a
window is in another language (app/pipeline/languages.py). This prints, per clip, every window
(start, seconds of speech, the three likeliest languages) and the warning, on:

- single-language speech: the espeak dialogues the tests use, the bench's own dialogues, the known
  passage, the pyannote wheel's telephone sample, and any recordings in `--recordings` folders
  (WAV/FLAC/MP3/OGG, each taken as one language);
- no speech: 20 s of silence, 5 s of white noise;
- `MIXED`, the fixed list of mixed-language clips the tests keep (espeak-ng, one language after another).

A false alarm is a warning on the first two kinds; a miss, none on the third. The margins printed
are how far each clip's strongest evidence stays from the thresholds.

    .venv/bin/python -m bench.language_check [--recordings DIR ...] [--only mixed|single|recordings|none]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from app.config import Settings
from app.media import SUPPORTED_EXTENSIONS
from app.pipeline.base import Job
from app.pipeline.languages import OWN_CHANCE, SLICE_SECONDS, Window
from app.pipeline.whisperx_pipeline import WhisperXPipeline
from bench.diarization import dialogue, make_dialogue

MIXED: dict[str, list[tuple[str, str]]] = {
    "en-then-de": [
        (
            "en-us",
            "The bakery on the corner opens early every morning. Fresh bread and warm rolls are sold before "
            "sunrise. Many people stop there on their way to work. The owner has run the shop for twenty years.",
        ),
        (
            "de",
            "Im Sommer fahren wir gern an das Meer. Die Sonne scheint und das Wasser ist warm. "
            "Die Kinder bauen eine Burg aus Sand. Am Nachmittag essen wir ein Eis und gehen am Strand spazieren.",
        ),
    ],
    "de-then-en": [
        (
            "de",
            "Ich arbeite jeden Tag in einem großen Büro. Mein Kollege trinkt sehr viel Tee. "
            "Wir schreiben viele Briefe und telefonieren mit unseren Kunden. Um fünf Uhr gehen wir nach Hause. "
            "Am Abend kochen wir zusammen und spielen mit den Kindern im Garten.",
        ),
        (
            "en-us",
            "Please send the report to the whole team before Friday. The meeting will start at ten in the "
            "small room on the second floor. Bring your laptop and the printed charts for the budget.",
        ),
    ],
}
"""Mixed-language clips, about 15 s in one language then 15-20 s in another. `en-then-de` must be
flagged (tests/real/test_language_detection.py); `de-then-en` is not, a known limit: espeak's
German before the English reads as English 0.31-0.36 to `base`, as noisy real English does."""


def _recordings(folders: list[Path]) -> dict[str, Path]:
    return {
        f"{folder.name}/{path.relative_to(folder)}": path
        for folder in folders
        for path in sorted(folder.rglob("*"))
        if path.suffix.lower().lstrip(".") in SUPPORTED_EXTENSIONS
    }


def _single(folder: Path) -> dict[str, Path]:
    from tests.conftest import speak
    from tests.real.conftest import KNOWN_TEXT
    from tests.real.test_diarization import THREE_VOICES, TWO_VOICES
    from tests.real.test_speakers import DIALOGUE
    from tests.real.test_subtitles import TURNS

    clips = {}
    for name, turns, gap in (
        ("tests-two-voices", TWO_VOICES, 0.0), ("tests-three-voices", THREE_VOICES, 0.3),
        ("tests-speakers", DIALOGUE, 0.3), ("tests-subtitles", TURNS, 0.4),
    ):  # fmt: skip
        make_dialogue(name, turns, gap, folder)
        clips[name] = folder / f"{name}.wav"
    clips["known"] = speak(KNOWN_TEXT, folder / "known.wav")
    for voices in (2, 3):
        case = dialogue(voices, 0.3, folder)
        clips[case.name] = folder / f"{case.name}.wav"
    clips["pyannote-sample"] = _sample_path()
    return clips


def _sample_path() -> Path:
    import pyannote.audio

    return Path(pyannote.audio.__file__).parent / "sample" / "sample.wav"


def _no_speech(folder: Path) -> dict[str, Path]:
    silent, noise = folder / "silence-20s.wav", folder / "white-noise-5s.wav"
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", str(silent), "trim", "0", "20"], check=True)
    command = ["sox", "-n", "-r", "16000", "-c", "1", str(noise), "synth", "5", "whitenoise", "vol", "0.3"]
    subprocess.run(command, check=True)
    return {"silence-20s": silent, "white-noise-5s": noise}


def mixed_clips(folder: Path) -> dict[str, Path]:
    """`MIXED` spoken with espeak-ng (150 words a minute) into `folder`, 0.5 s between the parts."""
    from tests.conftest import speak

    clips = {}
    for name, turns in MIXED.items():
        parts = [speak(text, folder / f"{name}-{index}.wav", voice=voice) for index, (voice, text) in enumerate(turns)]
        pause = folder / "pause.wav"
        subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", str(pause), "trim", "0", "0.5"], check=True)
        clips[name] = folder / f"{name}.wav"
        joined = [str(path) for part in parts for path in (part, pause)][:-1]
        subprocess.run(["sox", *joined, str(clips[name])], check=True)
    return clips


def windows_of(pipeline: WhisperXPipeline, path: Path) -> tuple[dict[str, object], list[Window], float]:
    """The result (no diarization, language detected) and the windows the check read."""
    from app.pipeline import languages

    seen: list[Window] = []
    original = languages.second_language_warning

    def spy(language: str, windows: list[Window]) -> str | None:
        seen.extend(windows)
        return original(language, windows)

    import app.pipeline.whisperx_pipeline as module

    module.second_language_warning = spy  # type: ignore[assignment]
    try:
        began = time.perf_counter()
        result = pipeline.run(Job(path.stem, path, enable_diarization=False), lambda *_: None).result
        return result, seen, time.perf_counter() - began
    finally:
        module.second_language_warning = original


def margin(language: str | None, windows: list[Window]) -> float | None:
    """How far the full stretch nearest to counting against `language` stays from it: a stretch counts
    when the language's probability is at most OWN_CHANCE and another's is higher, so its distance is
    the larger of (own - OWN_CHANCE) and (own - the likeliest other). Negative: a warning. None when no
    stretch is full."""
    if language is None:
        return None
    distances = [
        max(own - OWN_CHANCE, own - max(chance for found, chance in window.probabilities.items() if found != language))
        for window in windows
        if window.seconds >= SLICE_SECONDS
        for own in [window.probabilities.get(language, 0.0)]
    ]
    return min(distances) if distances else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recordings", type=Path, nargs="*", default=[], help="folders of single-language audio")
    parser.add_argument("--only", choices=["mixed", "single", "recordings", "none"], help="one kind of clip only")
    args = parser.parse_args()
    pipeline = WhisperXPipeline(Settings())
    pipeline.finish_loading()
    print(f"model {pipeline.model_name}, {pipeline.device}, batch {pipeline.batch_size}")
    print(f"a {SLICE_SECONDS}-s stretch counts against the file's language at {OWN_CHANCE} or less, another higher")
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        kinds = {
            "single": lambda: _single(folder),
            "recordings": lambda: _recordings(args.recordings),
            "none": lambda: _no_speech(folder),
            "mixed": lambda: mixed_clips(folder),
        }
        for kind, build in kinds.items():
            if args.only and kind != args.only:
                continue
            for name, path in build().items():
                result, windows, seconds = windows_of(pipeline, path)
                language = result["language"]
                assert language is None or isinstance(language, str)
                warned = bool(result.get("warnings"))
                verdict = ("ok" if warned else "MISSED") if kind == "mixed" else ("FALSE ALARM" if warned else "ok")
                left = margin(language, windows)
                shown = "n/a" if left is None else f"{left:+.2f}"
                print(f"\n[{kind}] {name}: language {language}, {seconds:.1f} s, margin {shown}, {verdict}")
                for window in windows:
                    top = sorted(window.probabilities.items(), key=lambda item: -item[1])[:3]
                    found = ", ".join(f"{code} {chance:.2f}" for code, chance in top)
                    print(f"  {window.start:7.1f} s  {window.seconds:5.1f} s of speech  {found}")
                if warned:
                    print(f"  warning: {result['warnings']}")  # type: ignore[index]


if __name__ == "__main__":
    main()
