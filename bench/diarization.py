"""How well `EmbeddedDiarizer` finds who spoke when, and how fast.

Files with exact references:
- pyannote's `sample.wav` (30 s of two-speaker telephone English) against its `sample.rttm`;
- espeak-ng dialogues of 2, 3 and 4 voices, turns abutting or 0.5 s apart; each turn's
  leading and trailing silence is trimmed, so the reference is the turns' sample counts;
- long espeak-ng meetings (--minutes, 5 and 10 by default) of 2, 3 and 4 voices, and one of two
  voices where a third speaks a single ~5-s turn half way through: the speaker count must hold
  on long files without splitting a voice or folding the guest away.

Run from the repository root:  python -m bench.diarization [--threads N] [--device cpu] [--minutes 5,10,30]
Prints a table and a summary per length, and writes JSON under bench/results/. DER uses pyannote.metrics with
skip_overlap=False; its `collar` is the total width around each reference boundary, so
"±0.25 s" is `collar=0.5`.
"""

from __future__ import annotations

import argparse
import hashlib
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

# espeak-ng voice, pitch (-p), speed (-s). The first four are the benchmark's, picked among 18
# candidates for distinct Resemblyzer embeddings: between them cosine 0.56-0.72 on two different
# texts (one voice across the two texts: 0.93-0.97); --voice-similarity prints 0.59-0.75 for all
# of LINES per voice. The last four, for the tests, were picked the same way among 39 candidates
# (0.53-0.63 between them, 0.96-0.98 for one voice across texts), so that the diarizer is never
# tested on the voices it was tuned on. Many espeak voices sound alike to the encoder (en-us vs
# en-gb 0.92; most named variants such as "+Max" or "+Zac" 0.96-0.97 to each other), so check
# every added voice with --voice-similarity.
VOICES: dict[str, tuple[str, int, int]] = {
    "f4": ("en-us+f4", 50, 160),  # female variant
    "michael": ("en-us+Michael", 40, 150),  # low male
    "klatt3": ("en-us+klatt3", 50, 160),  # Klatt synthesiser, another timbre
    "nyc_m5": ("en-us-nyc+m5", 35, 150),  # New York accent, low male variant
    "f5": ("en-us+f5", 55, 150),
    "gene": ("en-us+Gene", 50, 150),
    "lee": ("en-us+Lee", 50, 150),
    "alicia": ("en-us+Alicia", 55, 150),
}
BENCH_VOICES = ["f4", "michael", "klatt3", "nyc_m5"]

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


# Long meetings: other sentences than LINES and the tests', said in turns of one to three.
MEETING_LINES = [
    "Let us begin with the status of the warehouse move.",
    "The movers confirmed the second week of May.",
    "Do we know how many pallets we are taking?",
    "About forty, if we leave the old shelving behind.",
    "I would rather sell the shelving than store it.",
    "Fine by me.",
    "The new site has a loading dock on the east side only.",
    "That means the trucks have to turn in the yard.",
    "Is the yard big enough for the long trailers?",
    "Barely. We measured it twice last Friday.",
    "Then we should book the smaller trucks instead.",
    "They cost more per trip, though.",
    "How much more are we talking about?",
    "Roughly twelve percent, spread over six trips.",
    "Exactly.",
    "I can live with that if it avoids damage.",
    "Next point: the training plan for the new scanners.",
    "The vendor offers two sessions of three hours each.",
    "Can they come on site, or is it online only?",
    "On site, but only on Tuesdays and Wednesdays.",
    "Wednesday suits the night shift better.",
    "Good, I will write to them this afternoon.",
    "What about people who are on holiday that week?",
    "We record the session and share the video.",
    "Right, that should cover most of them.",
    "Moving on, the heating in the office failed again.",
    "Is it the same valve as in January?",
    "The engineer thinks it is the pump this time.",
    "Hmm, we replaced that pump two years ago.",
    "It is still under warranty, so the repair is free.",
    "Let us ask for a written report this time.",
    "Agreed, and a date for the repair.",
    "Last item: the summer party.",
    "The restaurant by the lake has room for sixty guests.",
    "Last year we were fifty two, so that works.",
    "Can we bring partners and children this time?",
    "I do not see why not, if the budget allows it.",
    "I will ask finance for a number by Monday.",
    "Sounds good. Anything else before we close?",
    "No, that is all from my side. Thank you, everyone.",
]


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
    smallest_speaker_s: float  # speech of the found speaker who speaks least
    der_collar0: float
    der_collar_025: float
    miss: float
    false_alarm: float
    confusion: float
    rtf: float


def speak(text: str, voice: str, target: Path) -> np.ndarray:
    """One turn: espeak-ng speech at 16 kHz mono with its leading and trailing silence trimmed.

    A `target` that exists is read back: long dialogues repeat sentences, and a cache folder
    spares synthesising them again.
    """
    name, pitch, speed = VOICES[voice]
    if not target.exists():
        raw = target.with_suffix(".raw.wav")
        subprocess.run(["espeak-ng", "-v", name, "-p", str(pitch), "-s", str(speed), "-w", str(raw), text], check=True)
        trim = ["silence", "1", "0.02", "0.5%"]
        subprocess.run(
            ["sox", "-V1", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(target),
             *trim, "reverse", *trim, "reverse"],
            check=True,
        )  # fmt: skip
        raw.unlink()
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
    voices = BENCH_VOICES[:num_voices]
    turns = [(voices[speaker], LINES[turn % len(LINES)]) for turn, speaker in enumerate(TURN_ORDER[num_voices])]
    return make_dialogue(f"espeak-{num_voices}v-{'gap' if gap_s else 'nogap'}", turns, gap_s, workdir)


def long_dialogue(
    name: str,
    voices: list[str],
    minutes: float,
    lines: list[str],
    workdir: Path,
    guest: tuple[str, str] | None = None,
    seed: int = 0,
) -> Case:
    """A meeting of about `minutes`: each turn one to three of `lines` (in a shuffled cycle) by
    another voice than the last, 0-0.8 s after the previous turn and 0.25 s between its sentences.
    A `guest` (voice, text) speaks once, half way through. Clips are cached in `workdir / "clips"`."""
    from pyannote.core import Annotation, Segment

    rng = np.random.default_rng(seed)
    clips = workdir / "clips"
    clips.mkdir(parents=True, exist_ok=True)

    def clip(voice: str, text: str) -> np.ndarray:
        key = hashlib.sha256(f"{VOICES[voice]}|{text}".encode()).hexdigest()[:16]
        return speak(text, voice, clips / f"{voice}-{key}.wav")

    def next_line() -> str:
        if not queue:
            queue.extend(rng.permutation(lines).tolist())
        return queue.pop()

    queue: list[str] = []
    reference = Annotation(uri=name)
    pieces: list[np.ndarray] = []
    cursor, voice = 0, ""
    while cursor < minutes * 60 * SAMPLE_RATE:
        if guest and cursor >= minutes * 30 * SAMPLE_RATE:
            voice, said = guest[0], [clip(*guest)]
            guest = None
        else:
            voice = str(rng.choice([v for v in voices if v != voice]))
            said = [clip(voice, next_line()) for _ in range(int(rng.integers(1, 4)))]
        for sentence, audio in enumerate(said):
            pause = 0.25 if sentence else float(rng.choice([0.0, 0.2, 0.4, 0.8])) if pieces else 0.0
            pieces.append(np.zeros(round(pause * SAMPLE_RATE), dtype=np.float32))
            cursor += pieces[-1].size
            reference[Segment(cursor / SAMPLE_RATE, (cursor + audio.size) / SAMPLE_RATE)] = voice
            pieces.append(audio)
            cursor += audio.size
    return Case(name, np.concatenate(pieces), reference)


def pyannote_sample() -> Case:
    import pyannote.audio
    from pyannote.database.util import load_rttm

    folder = Path(pyannote.audio.__file__).parent / "sample"
    reference = next(iter(load_rttm(folder / "sample.rttm").values()))
    return Case("pyannote-sample", decode(folder / "sample.wav", timeout=60, max_seconds=3600), reference)


GUEST_LINE = "Sorry to interrupt, the visitors from the bank have just arrived at reception."


def meetings(minutes: float, workdir: Path) -> list[Case]:
    """Meetings of 2, 3 and 4 voices, and one of two voices where a third speaks a single ~5-s turn."""
    length = f"{minutes:g}m"
    voices = [
        long_dialogue(f"meeting-{n}v-{length}", BENCH_VOICES[:n], minutes, MEETING_LINES, workdir) for n in (2, 3, 4)
    ]
    guest = long_dialogue(
        f"guest-5s-{length}", BENCH_VOICES[:2], minutes, MEETING_LINES, workdir, guest=("klatt3", GUEST_LINE)
    )
    return [*voices, guest]


def cases(workdir: Path, minutes: list[float]) -> list[Case]:
    generated = [dialogue(n, gap, workdir) for n in (2, 3, 4) for gap in (0.0, 0.5)]
    return [pyannote_sample(), *generated, *(case for length in minutes for case in meetings(length, workdir))]


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
        smallest_speaker_s=round(float((turns["end"] - turns["start"]).groupby(turns["speaker"]).sum().min()), 1),
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
    header = (
        f"{'file':<22}{'dur s':>7}{'spk':>6}{'min s':>7}{'DER c0':>9}{'DER ±.25':>10}"
        f"{'miss':>7}{'FA':>7}{'conf':>7}{'RTF':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.file:<22}{r.duration_s:>7.1f}{f'{r.speakers_true}/{r.speakers_found}':>6}{r.smallest_speaker_s:>7.1f}"
            f"{r.der_collar0:>8.2f}%{r.der_collar_025:>9.2f}%{r.miss:>7.2f}{r.false_alarm:>7.2f}"
            f"{r.confusion:>7.2f}{r.rtf:>7.3f}"
        )


def print_summary(rows: list[Row]) -> None:
    """Speaker counts right and mean DER, per length of file (the meetings' names end in it)."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        length = row.file.rsplit("-", 1)[-1] if row.file.startswith(("meeting-", "guest-")) else "short"
        groups.setdefault(length, []).append(row)
    print(f"\n{'length':<8}{'files':>6}{'count right':>13}{'DER c0':>9}{'DER ±.25':>10}")
    for length, group in groups.items():
        right = sum(r.speakers_found == r.speakers_true for r in group)
        c0 = sum(r.der_collar0 for r in group) / len(group)
        c25 = sum(r.der_collar_025 for r in group) / len(group)
        print(f"{length:<8}{len(group):>6}{f'{right}/{len(group)}':>13}{c0:>8.2f}%{c25:>9.2f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--oracle-count", action="store_true", help="pass the true number of speakers")
    parser.add_argument("--voice-similarity", action="store_true", help="only print the voices' similarities")
    parser.add_argument(
        "--minutes", default="5,10", help="lengths of the long meetings, comma-separated (e.g. 5,10,30; 0 for none)"
    )
    parser.add_argument("--audio-cache", type=Path, help="keep the synthesised sentences here between runs")
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
        minutes = [float(m) for m in args.minutes.split(",") if float(m) > 0]
        benchmark = cases(args.audio_cache or workdir, minutes)
        # The first call pays one-off costs (kernel set-up); keep them out of the RTF.
        started = time.perf_counter()
        diarizer(benchmark[0].audio[: 10 * SAMPLE_RATE])
        warm_up_s = time.perf_counter() - started
        rows = [evaluate(diarizer, case, args.oracle_count) for case in benchmark]

    threads = torch.get_num_threads()
    print(f"load (imports + models) {load_s:.2f} s, first call on 10 s {warm_up_s:.2f} s, torch threads {threads}")
    print_table(rows)
    print_summary(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    target = RESULTS / f"diarization-{time.strftime('%Y%m%d-%H%M%S')}.json"
    report = {
        "load_s": round(load_s, 2),
        "first_call_10s_s": round(warm_up_s, 2),
        "threads": threads,
        "oracle_count": args.oracle_count,
        "minutes": minutes,
        "voices": VOICES,
        "rows": [asdict(row) for row in rows],
    }
    target.write_text(json.dumps(report, indent=2))
    print(f"wrote {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
