"""The speaker count holds on long recordings: no spurious speakers, no real voice folded away.

The meetings use voices and sentences that the diarizer was not tuned on (the benchmark's are
others): the voices were picked for distinct speaker embeddings, as bench/diarization.py says.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pyannote.core import Annotation, Segment

from app.pipeline.diarizers import EmbeddedDiarizer
from bench.diarization import Case, long_dialogue, write_wav
from tests.real.conftest import Server, submit, wait_done

HOSTS = ["gene", "alicia"]
GUEST = ("lee", "Excuse me, the taxi for the airport is waiting outside the main entrance.")
LINES = [
    "So, the kitchen is the first room we want to renovate.",
    "How old are the cupboards in there?",
    "They came with the house, more than thirty years ago.",
    "Then the doors will not fit the new hinges.",
    "We were thinking of white doors with oak handles.",
    "That looks clean, and it is easy to repaint later.",
    "What about the floor? The tiles are cracked near the sink.",
    "I would lay new tiles over the whole room.",
    "Will the dishwasher still fit under the counter?",
    "Yes, if we lower the plinth by a few millimetres.",
    "How long does the work take, roughly?",
    "About three weeks, if the worktop arrives on time.",
    "Can we still cook during those weeks?",
    "Only in the first few days, before the water is cut.",
    "Then we will eat at my sister's place for a while.",
    "Good idea. I will send you a plan by Thursday.",
    "Does the price include taking away the old units?",
    "It does, and the skip in front of the house.",
    "Perfect.",
    "We also need more sockets along the back wall.",
    "An electrician can add four without opening the ceiling.",
    "Please put that in the quote as a separate line.",
    "Of course.",
    "Then I think we have covered everything for today.",
]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder of synthesised sentences for both meetings: each is made once."""
    return tmp_path_factory.mktemp("long-meetings")


def _labels_by_voice(reference: Annotation, turns: Any) -> dict[str, Counter[str]]:
    """For each reference voice, the diarizer's labels over its speech, weighted by seconds."""
    seconds: dict[str, Counter[str]] = {voice: Counter() for voice in reference.labels()}
    for turn in turns.itertuples():
        found = Segment(turn.start, turn.end)
        for segment, _, voice in reference.crop(found).itertracks(yield_label=True):
            seconds[voice][turn.speaker] += (segment & found).duration
    return seconds


def test_long_two_voice_meeting_gets_two_speakers(server: Server, clips: Path, tmp_path: Path) -> None:
    meeting = long_dialogue("two-voices-long", HOSTS, 8.5, LINES, clips, seed=19)
    wav = tmp_path / "meeting.wav"
    write_wav(wav, meeting.audio)
    done = wait_done(submit(wav), timeout=900)
    assert done["status"] == "completed", done["error"]
    result = done["result"]
    assert [speaker["speaker"] for speaker in result["speakers"]] == ["SPEAKER_00", "SPEAKER_01"], result["speakers"]
    _check_words(meeting, result)


def _check_words(meeting: Case, result: dict[str, Any]) -> None:
    """Each voice's words carry its own label: one label per voice, and 95 % of the words right."""
    reference: Annotation = meeting.reference
    words = [word for segment in result["segments"] for word in segment["words"] if "start" in word]
    voices = []
    for word in words:
        middle = (word["start"] + word["end"]) / 2
        labels = reference.crop(Segment(middle - 0.01, middle + 0.01)).labels()
        voices.append(labels[0] if labels else None)
    pairs = [(voice, word["speaker"]) for voice, word in zip(voices, words, strict=True) if voice]
    label_of = {voice: Counter(s for v, s in pairs if v == voice).most_common(1)[0][0] for voice in HOSTS}
    assert len(set(label_of.values())) == 2, label_of
    right = sum(speaker == label_of[voice] for voice, speaker in pairs)
    assert right / len(pairs) >= 0.95, f"{right}/{len(pairs)} words on their speaker's label"


def test_a_guest_with_one_short_turn_stays_a_speaker(clips: Path, tmp_path: Path) -> None:
    # The diarizer alone: transcription would add minutes and nothing to what is checked.
    meeting = long_dialogue("guest", HOSTS, 8.5, LINES, clips, guest=GUEST, seed=7)
    guest_turn = meeting.reference.label_timeline(GUEST[0])  # type: ignore[attr-defined]
    assert 4 < guest_turn.duration() < 6.5, "the guest speaks one turn of about 5 s"

    turns = EmbeddedDiarizer("cpu", tmp_path / "cache")(meeting.audio)
    assert turns["speaker"].nunique() == 3, turns.groupby("speaker").apply(len)
    by_voice = _labels_by_voice(meeting.reference, turns)
    guest_label, guest_seconds = by_voice[GUEST[0]].most_common(1)[0]
    assert guest_seconds >= 0.8 * guest_turn.duration(), by_voice
    # The guest's label is the guest's alone: little of the hosts' speech carries it.
    assert all(by_voice[host][guest_label] < 1.0 for host in HOSTS), by_voice
