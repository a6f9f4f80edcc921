"""Speaker labels through a live session (app/live/speakers.py), on voiceprints made up for the test."""

from __future__ import annotations

import numpy as np

from app.live.speakers import SAME_VOICE, SpeakerTracker
from app.voices.matching import EMBEDDED_ENCODER


def _near(vector: list[float], similarity: float) -> list[float]:
    """A unit vector at the given cosine similarity to `vector`, turned towards the last axis (no voice's)."""
    away = np.zeros(len(vector))
    away[-1] = 1.0
    return [float(x) for x in similarity * np.asarray(vector) + np.sqrt(1 - similarity**2) * away]


def test_a_voice_keeps_its_label_and_a_new_one_gets_the_next() -> None:
    alice, bob = [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]
    tracker = SpeakerTracker()
    labels = [
        tracker.assign(alice),
        tracker.assign(_near(alice, SAME_VOICE + 0.05)),
        tracker.assign(bob),
        tracker.assign(None),  # too short for a voiceprint: the speaker before
        tracker.assign(_near(alice, SAME_VOICE + 0.05)),
        tracker.assign(_near(bob, SAME_VOICE - 0.1)),  # too far from Bob: someone else
    ]
    assert labels == ["SPEAKER_00", "SPEAKER_00", "SPEAKER_01", "SPEAKER_01", "SPEAKER_00", "SPEAKER_02"]


def test_enrolled_voices_name_speakers_only_when_asked() -> None:
    alice, bob = [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]
    enrolled = [
        {"name": "Alice", "encoder": EMBEDDED_ENCODER, "embedding": alice},
        {"name": "Bob", "encoder": "pyannote:other", "embedding": bob},  # another encoder's: never compared
    ]
    tracker = SpeakerTracker(enrolled)
    assert tracker.assign(alice) == "SPEAKER_00"
    assert tracker.assign(alice, identify=True) == "Alice"
    assert tracker.assign(bob, identify=True) == "SPEAKER_01"
