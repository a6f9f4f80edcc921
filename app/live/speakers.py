"""Speaker labels through a live session: each utterance's voiceprint joins the closest voice heard
so far, or starts a new one, so the same voice keeps its label; a voice that matches one of the
key's enrolled voices carries its name."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from app.voices.matching import EMBEDDED_ENCODER, best_matches, threshold_for, unit

SAME_VOICE = 0.72
"""Cosine similarity of an utterance's voiceprint to a voice's mean at or above which it is that voice.
Single sentences are noisier than a speaker's whole speech, so this is below EMBEDDED_THRESHOLD.
Measured on the espeak-ng voices of tests/real/test_realtime.py, one sentence each: 0.82–0.91
between sentences of one voice, 0.48–0.61 between the two voices; 0.72 sits between them."""


class SpeakerTracker:
    def __init__(self, enrolled: Sequence[Mapping[str, Any]] = ()) -> None:
        self._enrolled = [voice for voice in enrolled if voice.get("encoder") == EMBEDDED_ENCODER]
        self._voices: list[tuple[str, np.ndarray, int]] = []  # label, running mean, utterances
        self.last: str | None = None

    def assign(self, embedding: Sequence[float] | None, identify: bool = False) -> str | None:
        """The label of an utterance's voice (with `identify`, the enrolled name it matches); without a
        voiceprint, the previous speaker's."""
        if embedding is None:
            return self.last
        vector = unit(embedding)
        scores = [float(unit(mean) @ vector) for _, mean, _ in self._voices]
        best = int(np.argmax(scores)) if scores else -1
        if best >= 0 and scores[best] >= SAME_VOICE:
            label, mean, count = self._voices[best]
            self._voices[best] = (label, (mean * count + vector) / (count + 1), count + 1)
        else:
            best = len(self._voices)
            self._voices.append((f"SPEAKER_{best:02d}", vector, 1))
        self.last = self._name(best) if identify else self._voices[best][0]
        return self.last

    def _name(self, index: int) -> str:
        label = self._voices[index][0]
        if not self._enrolled:
            return label
        others = {other: list(vector) for other, vector, _ in self._voices}
        matches = best_matches(others, self._enrolled, threshold_for(EMBEDDED_ENCODER))
        entry = next(entry for entry in matches if entry["speaker"] == label)
        return str(entry["match"]) if entry["identified"] else label
