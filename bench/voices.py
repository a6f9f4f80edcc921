"""How well enrolled voices are recognised in later recordings (the embedded speaker encoder).

Each voice is enrolled from one clip of its own sentences, as `POST /api/v1/speakers` does
(speech found by the VAD, then embedded). Dialogues of other sentences, in other turn orders, are
then diarized by `EmbeddedDiarizer`, each speaker found gets an embedding from its turns, and that is
compared with the enrolled voices, as a task with `identify_speakers` does. One voice of each
dialogue is never enrolled, in turn, so every voice is also measured as a stranger.

Real speech: pyannote's two-speaker sample; each speaker is enrolled from its turns in the first
half (by the reference), the second half is diarized and identified; then each speaker alone is
enrolled, to see whether the other is mistaken for them.

Run from the repository root:  python -m bench.voices [--threshold 0.84]
Prints, for a sweep of thresholds, the accuracy of names (enrolled voices named right) and the
false-accept rate (speakers never enrolled who were given a name).
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.voices.matching import EMBEDDED_THRESHOLD, best_matches
from bench.diarization import SAMPLE_RATE, VOICES, make_dialogue, pyannote_sample, speak

# Enrolment clips: sentences no dialogue uses.
ENROL_LINES = [
    "Hello, this is a short recording of my voice for the service to learn.",
    "I am reading a few sentences so that it can recognise me later on.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
]
DIALOGUE_LINES = [
    "Did you manage to fix the heating in the office?",
    "Not yet, the engineer is coming back on Monday morning.",
    "Then we should move the meeting to the small room downstairs.",
    "Good idea, it stays warm there even in winter.",
    "I will tell the others and book it for ten o'clock.",
    "Please bring the printed reports, the screen is broken too.",
    "Of course. Anything else before I go?",
    "No, that is all. See you on Monday.",
    "Have a nice weekend, both of you.",
]
TURN_ORDERS = [[0, 1, 2, 1, 0, 2, 1, 2, 0], [2, 0, 1, 0, 2, 1, 0, 1, 2]]


@dataclass
class Trial:
    """One speaker found in a recording: who it really is, and its best match."""

    truth: str
    enrolled: bool
    match: str | None
    score: float


def _embedded_encoder() -> Any:
    from app.pipeline.diarizers import ResemblyzerEmbedding

    return ResemblyzerEmbedding()


def enrol_voices(encoder: Any, workdir: Path) -> dict[str, list[float]]:
    from app.pipeline.voiceprints import embed, speech_only

    enrolled = {}
    for voice in VOICES:
        clip = np.concatenate(
            [speak(line, voice, workdir / f"enrol-{voice}-{i}.wav") for i, line in enumerate(ENROL_LINES)]
        )
        embedding = embed(encoder, speech_only(clip))
        assert embedding is not None
        enrolled[voice] = embedding
    return enrolled


def _truth(turns: Any, reference: Any) -> dict[str, str]:
    """Each found label's true speaker: the reference speaker it overlaps most."""
    from pyannote.core import Segment

    overlap: dict[str, dict[str, float]] = {}
    for turn in turns.itertuples():
        for segment, _, truth in reference.crop(Segment(turn.start, turn.end)).itertracks(yield_label=True):
            by_truth = overlap.setdefault(turn.speaker, {})
            by_truth[truth] = by_truth.get(truth, 0.0) + segment.duration
    return {label: max(by_truth, key=lambda truth: by_truth[truth]) for label, by_truth in overlap.items()}


def identify(
    diarizer: Any, encoder: Any, audio: np.ndarray, reference: Any, voices: dict[str, list[float]]
) -> list[Trial]:
    from app.pipeline.voiceprints import speaker_embeddings

    turns = diarizer(audio)
    truth = _truth(turns, reference)
    found = speaker_embeddings(encoder, audio, turns)
    enrolled = [{"name": name, "embedding": embedding} for name, embedding in voices.items()]
    return [
        Trial(truth[entry["speaker"]], truth[entry["speaker"]] in voices, entry["match"], entry["score"])
        for entry in best_matches(found, enrolled, threshold=-1.0)
    ]


def espeak_trials(diarizer: Any, encoder: Any, workdir: Path) -> list[Trial]:
    enrolled = enrol_voices(encoder, workdir)
    names = list(VOICES)
    trials = []
    for stranger in names:  # each voice in turn is never enrolled
        cast = [stranger, *[name for name in names if name != stranger][:2]]
        for number, order in enumerate(TURN_ORDERS):
            turns = [(cast[speaker], DIALOGUE_LINES[i]) for i, speaker in enumerate(order)]
            case = make_dialogue(f"voices-{stranger}-{number}", turns, 0.3, workdir)
            known = {name: enrolled[name] for name in names if name != stranger}
            trials += identify(diarizer, encoder, case.audio, case.reference, known)
    return trials


def sample_trials(diarizer: Any, encoder: Any) -> list[Trial]:
    from pyannote.core import Segment

    from app.pipeline.voiceprints import embed

    case = pyannote_sample()
    middle = case.audio.size / SAMPLE_RATE / 2
    first = case.reference.crop(Segment(0, middle))
    voices = {}
    for speaker in first.labels():
        pieces = [
            case.audio[round(s.start * SAMPLE_RATE) : round(s.end * SAMPLE_RATE)] for s in first.label_timeline(speaker)
        ]
        voices[speaker] = embed(encoder, np.concatenate(pieces))
    second_audio = case.audio[round(middle * SAMPLE_RATE) :]
    second = _shifted(case.reference.crop(Segment(middle, case.audio.size / SAMPLE_RATE)), -middle)
    trials = identify(diarizer, encoder, second_audio, second, {k: v for k, v in voices.items() if v})
    for alone in voices:  # only one speaker enrolled: the other is a stranger
        trials += identify(diarizer, encoder, second_audio, second, {alone: voices[alone]})  # type: ignore[dict-item]
    return trials


def _shifted(annotation: Any, offset: float) -> Any:
    from pyannote.core import Annotation, Segment

    moved = Annotation(uri=annotation.uri)
    for segment, track, label in annotation.itertracks(yield_label=True):
        moved[Segment(segment.start + offset, segment.end + offset), track] = label
    return moved


def rates(trials: list[Trial], threshold: float) -> tuple[float, float, int, int]:
    """Accuracy of names over enrolled speakers, false-accept rate over strangers, and their counts."""
    known = [t for t in trials if t.enrolled]
    strangers = [t for t in trials if not t.enrolled]
    right = sum(t.score >= threshold and t.match == t.truth for t in known)
    accepted = sum(t.score >= threshold for t in strangers)
    return right / max(len(known), 1), accepted / max(len(strangers), 1), len(known), len(strangers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threshold", type=float, default=EMBEDDED_THRESHOLD, help="the threshold to mark")
    args = parser.parse_args()

    import torch

    from app.pipeline.diarizers import EmbeddedDiarizer

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory(prefix="bench-voices-") as tmp:
        workdir = Path(tmp)
        diarizer = EmbeddedDiarizer("cpu", workdir / "cache")
        encoder = _embedded_encoder()
        sets = {
            "espeak-ng": espeak_trials(diarizer, encoder, workdir),
            "pyannote sample": sample_trials(diarizer, encoder),
        }
    for name, trials in sets.items():
        print(f"\n{name}: scores of enrolled speakers (own voice) and strangers (best match)")
        print(
            "  enrolled :", " ".join(f"{t.score:.3f}{'' if t.match == t.truth else '!'}" for t in trials if t.enrolled)
        )
        print("  strangers:", " ".join(f"{t.score:.3f}" for t in trials if not t.enrolled))
    print(f"\n{'threshold':>9} " + " ".join(f"{name + ' acc/FA':>26}" for name in sets))
    for threshold in sorted({*np.round(np.arange(0.70, 0.96, 0.02), 2), args.threshold}):
        cells = []
        for trials in sets.values():
            accuracy, false_accept, known, strangers = rates(trials, threshold)
            cells.append(f"{accuracy:>7.1%} of {known:<3} {false_accept:>6.1%} of {strangers:<3}")
        marker = "  <- chosen" if threshold == args.threshold else ""
        print(f"{threshold:>9.2f} " + " ".join(f"{cell:>26}" for cell in cells) + marker)


if __name__ == "__main__":
    main()
