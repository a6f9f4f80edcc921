"""How well `EmbeddedDiarizer` finds who spoke when, and how fast.

Files with exact references:
- pyannote's `sample.wav` (30 s of two-speaker telephone English) against its `sample.rttm`;
- espeak-ng dialogues of 2, 3 and 4 voices, turns abutting or 0.5 s apart; each turn's
  leading and trailing silence is trimmed, so the reference is the turns' sample counts.

Run from the repository root:  python -m bench.diarization [--threads N] [--device cpu]
Prints a table and writes JSON under bench/results/. DER uses pyannote.metrics with
skip_overlap=False; its `collar` is the total width around each reference boundary, so
"±0.25 s" is `collar=0.5`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
import wave
from dataclasses import asdict, dataclass
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from app.media import decode

if TYPE_CHECKING:
    from app.pipeline.diarizers import EmbeddedDiarizer

SAMPLE_RATE = 16000
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

# espeak-ng voice, pitch (-p), speed (-s). Picked among 18 candidates for distinct Resemblyzer
# embeddings: between these voices cosine 0.56-0.72 on two different texts (one voice across the
# two texts: 0.93-0.97); --voice-similarity prints 0.59-0.75 for all of LINES per voice.
# Many espeak voices sound alike to the encoder (en-us vs en-gb 0.92; "en-gb+<variant>" seemed to
# ignore the variant), so check every added voice with --voice-similarity.
VOICES: dict[str, tuple[str, int, int]] = {
    "f4": ("en-us+f4", 50, 160),  # female variant
    "michael": ("en-us+Michael", 40, 150),  # low male
    "klatt3": ("en-us+klatt3", 50, 160),  # Klatt synthesiser, another timbre
    "nyc_m5": ("en-us-nyc+m5", 35, 150),  # New York accent, low male variant
}

LINES = [
    "Good morning, thanks for joining the call so early.",
    "No problem at all. I wanted to go over the budget before the meeting.",
    "Right. The quarterly numbers came in yesterday afternoon.",
    "Yes.",
    "Sales in the northern region grew faster than we expected.",
    "That is good news, but the shipping costs went up as well.",
    "Could you send me the schedule for next week?",
    "Sure, I will put it in the shared folder tonight.",
    "Okay, thank you.",
    "We still have to decide who travels to the coast in March.",
    "I can go, as long as the trip does not clash with the audit.",
    "The audit starts on the fourteenth and takes about two days.",
    "Then the second half of the month works for me.",
    "Let us also invite the new engineer, she knows the suppliers.",
    "Agreed.",
    "One more thing: the printer on the third floor is broken again.",
    "I already called the technician; he comes on Thursday.",
    "Perfect. Is there anything else we should cover today?",
    "I think that is everything for now.",
    "Great, talk to you tomorrow then.",
]

# Who speaks each turn, by index into the voices used; short turns ("Yes.", "Agreed.") included.
TURN_ORDER = {
    2: [0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1],
    3: [0, 1, 2, 0, 2, 1, 0, 1, 2, 1, 0, 2],
    4: [0, 1, 2, 3, 1, 0, 3, 2, 0, 3, 1, 2, 3, 0],
}


@dataclass
class Case:
    name: str
    audio: np.ndarray
    reference: object  # pyannote.core.Annotation


@dataclass
class Row:
    file: str
    duration_s: float
    speakers_true: int
    speakers_found: int
    der_collar0: float
    der_collar_025: float
    miss: float
    false_alarm: float
    confusion: float
    rtf: float


def speak(text: str, voice: str, target: Path) -> np.ndarray:
    """One turn: espeak-ng speech at 16 kHz mono with its leading and trailing silence trimmed."""
    name, pitch, speed = VOICES[voice]
    raw = target.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", name, "-p", str(pitch), "-s", str(speed), "-w", str(raw), text], check=True)
    trim = ["silence", "1", "0.02", "0.5%"]
    subprocess.run(
        ["sox", "-V1", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(target),
         *trim, "reverse", *trim, "reverse"],
        check=True,
    )  # fmt: skip
    return decode(target, timeout=60, max_seconds=3600)


def write_wav(path: Path, audio: np.ndarray) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes())


def make_dialogue(name: str, turns: list[tuple[str, str]], gap_s: float, workdir: Path) -> Case:
    """Speech for (voice, text) turns, `gap_s` of silence between them, and its exact reference."""
    from pyannote.core import Annotation, Segment

    reference = Annotation(uri=name)
    pieces: list[np.ndarray] = []
    cursor = 0
    gap = np.zeros(round(gap_s * SAMPLE_RATE), dtype=np.float32)
    for turn, (voice, text) in enumerate(turns):
        audio = speak(text, voice, workdir / f"{name}-{turn:02d}.wav")
        if turn and gap.size:
            pieces.append(gap)
            cursor += gap.size
        reference[Segment(cursor / SAMPLE_RATE, (cursor + audio.size) / SAMPLE_RATE)] = voice
        pieces.append(audio)
        cursor += audio.size
    audio = np.concatenate(pieces)
    write_wav(workdir / f"{name}.wav", audio)
    return Case(name, audio, reference)


def dialogue(num_voices: int, gap_s: float, workdir: Path) -> Case:
    voices = list(VOICES)[:num_voices]
    turns = [(voices[speaker], LINES[turn % len(LINES)]) for turn, speaker in enumerate(TURN_ORDER[num_voices])]
    return make_dialogue(f"espeak-{num_voices}v-{'gap' if gap_s else 'nogap'}", turns, gap_s, workdir)


def pyannote_sample() -> Case:
    import pyannote.audio
    from pyannote.database.util import load_rttm

    folder = Path(pyannote.audio.__file__).parent / "sample"
    reference = next(iter(load_rttm(folder / "sample.rttm").values()))
    return Case("pyannote-sample", decode(folder / "sample.wav", timeout=60, max_seconds=3600), reference)


def cases(workdir: Path) -> list[Case]:
    generated = [dialogue(n, gap, workdir) for n in (2, 3, 4) for gap in (0.0, 0.5)]
    return [pyannote_sample(), *generated]


def evaluate(diarizer: EmbeddedDiarizer, case: Case, oracle_count: bool) -> Row:
    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate

    speakers_true = len(case.reference.labels())
    started = time.perf_counter()
    turns = diarizer(case.audio, num_speakers=speakers_true if oracle_count else None)
    elapsed = time.perf_counter() - started

    hypothesis = Annotation(uri=case.name)
    for turn in turns.itertuples():
        hypothesis[Segment(turn.start, turn.end), turn.label] = turn.speaker
    strict = DiarizationErrorRate(collar=0.0, skip_overlap=False)
    details = strict(case.reference, hypothesis, detailed=True)
    total = details["total"]
    forgiving = DiarizationErrorRate(collar=0.5, skip_overlap=False)  # ±0.25 s around each boundary
    duration = case.audio.size / SAMPLE_RATE
    return Row(
        file=case.name,
        duration_s=round(duration, 2),
        speakers_true=speakers_true,
        speakers_found=turns["speaker"].nunique(),
        der_collar0=round(100 * details["diarization error rate"], 2),
        der_collar_025=round(100 * forgiving(case.reference, hypothesis), 2),
        miss=round(100 * details["missed detection"] / total, 2),
        false_alarm=round(100 * details["false alarm"] / total, 2),
        confusion=round(100 * details["confusion"] / total, 2),
        rtf=round(elapsed / duration, 3),
    )


def voice_similarity(workdir: Path) -> None:
    """Cosine similarity of the voices' embeddings, each from a different text (as the encoder sees them)."""
    import torch

    from app.pipeline.diarizers import ResemblyzerEmbedding

    model = ResemblyzerEmbedding()
    embeddings = {}
    for voice in VOICES:
        audio = np.concatenate([speak(line, voice, workdir / f"sim-{voice}-{i}.wav") for i, line in enumerate(LINES)])
        with torch.inference_mode():
            embeddings[voice] = model(torch.from_numpy(audio)[None, None])[0].numpy()
    for a, b in combinations(VOICES, 2):
        print(f"{a:>8} {b:<8} {float(embeddings[a] @ embeddings[b]):.3f}")


def print_table(rows: list[Row]) -> None:
    header = f"{'file':<22}{'dur s':>7}{'spk':>8}{'DER c0':>9}{'DER ±.25':>10}{'miss':>7}{'FA':>7}{'conf':>7}{'RTF':>7}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.file:<22}{r.duration_s:>7.1f}{f'{r.speakers_true}/{r.speakers_found}':>8}"
            f"{r.der_collar0:>8.2f}%{r.der_collar_025:>9.2f}%{r.miss:>7.2f}{r.false_alarm:>7.2f}"
            f"{r.confusion:>7.2f}{r.rtf:>7.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--oracle-count", action="store_true", help="pass the true number of speakers")
    parser.add_argument("--voice-similarity", action="store_true", help="only print the voices' similarities")
    args = parser.parse_args()

    started = time.perf_counter()  # imports included: they are most of a worker's start-up
    import torch

    from app.pipeline.diarizers import EmbeddedDiarizer

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-diarization-") as tmp:
        workdir = Path(tmp)
        if args.voice_similarity:
            voice_similarity(workdir)
            return
        diarizer = EmbeddedDiarizer(args.device, cache_dir=workdir / "cache")
        load_s = time.perf_counter() - started
        benchmark = cases(workdir)
        # The first call pays one-off costs (kernel set-up); keep them out of the RTF.
        started = time.perf_counter()
        diarizer(benchmark[0].audio[: 10 * SAMPLE_RATE])
        warm_up_s = time.perf_counter() - started
        rows = [evaluate(diarizer, case, args.oracle_count) for case in benchmark]

    threads = torch.get_num_threads()
    print(f"load (imports + models) {load_s:.2f} s, first call on 10 s {warm_up_s:.2f} s, torch threads {threads}")
    print_table(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    target = RESULTS / f"diarization-{time.strftime('%Y%m%d-%H%M%S')}.json"
    report = {
        "load_s": round(load_s, 2),
        "first_call_10s_s": round(warm_up_s, 2),
        "threads": threads,
        "oracle_count": args.oracle_count,
        "voices": VOICES,
        "rows": [asdict(row) for row in rows],
    }
    target.write_text(json.dumps(report, indent=2))
    print(f"wrote {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
