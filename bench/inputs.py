"""The bench's audio, built on the spot: espeak-ng speech with known text looped to length, and
the pyannote wheel's `sample.wav` (real two-speaker telephone English) with its transcript."""

from __future__ import annotations

import importlib.util
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

TEXT = (
    "The weather is warm and sunny today. My brother likes to read books in the garden. "
    "We will meet at the station after lunch. Please bring some water and a small map. "
    "The little dog runs across the green field. Our neighbours planted apple trees last spring."
)


@dataclass(frozen=True)
class Clip:
    name: str
    path: Path
    reference: str
    """What is said, for the word error rate."""
    seconds: float


def duration(path: Path) -> float:
    return float(subprocess.run(["soxi", "-D", str(path)], capture_output=True, text=True, check=True).stdout)


def speech(minutes: float, folder: Path) -> Clip:
    """The passage read by espeak-ng, repeated to about `minutes` long, as 16 kHz mono WAV."""
    one = folder / "passage.wav"
    if not one.exists():
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(one), TEXT], check=True)
    repeats = max(1, round(minutes * 60 / duration(one)))
    name = f"speech-{minutes:g}min"
    path = folder / f"{name}.wav"
    # sox concatenates its inputs; the 1-30 minute clips are the passage read again and again.
    subprocess.run(["sox", *[str(one)] * repeats, "-r", "16000", "-c", "1", str(path)], check=True)
    return Clip(name, path, " ".join([TEXT] * repeats), duration(path))


@cache
def _pyannote_sample_dir() -> Path:
    spec = importlib.util.find_spec("pyannote.audio")
    if spec is None or spec.origin is None:
        raise RuntimeError("pyannote.audio is not installed; run scripts/setup")
    return Path(spec.origin).parent / "sample"


def pyannote_sample() -> Clip:
    """30 s of two people on the phone, with what they said from the wheel's `sample.stm`."""
    folder = _pyannote_sample_dir()
    # STM lines: file channel speaker start end words…
    words = [line.split(maxsplit=5)[5] for line in (folder / "sample.stm").read_text().splitlines() if line.strip()]
    path = folder / "sample.wav"
    return Clip("pyannote-sample", path, " ".join(words), duration(path))
