"""Comparing speaker embeddings and renaming a transcript's speakers: plain numpy, no models.

Used by the worker (identification after diarization) and by the API (enrolment, renaming).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

EMBEDDED_ENCODER = "resemblyzer-ge2e"
"""The embedded diarizer's speaker encoder; voices enrolled from audio samples use it too."""

# Cosine similarity at or above which a speaker is taken to be an enrolled voice.
# Embedded encoder: chosen with bench/voices.py, the lowest value at which no speaker who was never
# enrolled was named, on espeak-ng dialogues and pyannote's sample (docs/speakers.md has the figures).
# A wrong name misleads more than a missing one, which another sample to the voice can mend.
EMBEDDED_THRESHOLD = 0.87
# pyannote's own embedding models (HF_TOKEN): unmeasured here (the weights cannot be downloaded
# offline); a cautious value for their cosine similarities, where one speaker scores far above others.
PYANNOTE_THRESHOLD = 0.6


def threshold_for(encoder: str) -> float:
    return EMBEDDED_THRESHOLD if encoder == EMBEDDED_ENCODER else PYANNOTE_THRESHOLD


def unit(vector: Sequence[float] | np.ndarray) -> np.ndarray:
    array = np.asarray(vector, dtype=np.float64)
    norm = float(np.linalg.norm(array))
    if not np.isfinite(norm) or norm == 0:
        raise ValueError("an embedding of zero length cannot be compared")
    return array / norm


def add_sample(mean: Sequence[float], count: int, sample: Sequence[float]) -> list[float]:
    """The running mean of unit-length embeddings, after one more sample."""
    updated = (np.asarray(mean, dtype=np.float64) * count + unit(sample)) / (count + 1)
    return [float(value) for value in updated]


def best_matches(
    speakers: Mapping[str, Sequence[float]], voices: Sequence[Mapping[str, Any]], threshold: float
) -> list[dict[str, Any]]:
    """Each speaker label's closest voice (`name`, `embedding`) by cosine similarity.

    One entry per label: `speaker`, `match` (the closest name, or None when there are no voices) and
    `score`; `identified` when the score reaches the threshold. Two labels never take the same name:
    the name goes to the label that matches it best.
    """
    names = [str(voice["name"]) for voice in voices]
    rows = [unit(voice["embedding"]) for voice in voices]
    entries: list[dict[str, Any]] = []
    for label, embedding in speakers.items():
        scores = [float(unit(embedding) @ row) for row in rows]
        best = int(np.argmax(scores)) if scores else None
        entries.append(
            {
                "speaker": label,
                "match": names[best] if best is not None else None,
                "score": round(scores[best], 3) if best is not None else None,
                "identified": best is not None and scores[best] >= threshold,
            }
        )
    for entry in entries:
        rivals = [other for other in entries if other["identified"] and other["match"] == entry["match"]]
        if entry["identified"] and max(rivals, key=lambda other: other["score"]) is not entry:
            entry["identified"] = False
    return entries


def rename_speakers(result: dict[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    """A copy of a result whose speaker labels are replaced by names, in segments, words and `speakers`."""

    def renamed(label: Any) -> Any:
        return names.get(label, label) if isinstance(label, str) else label

    segments = [
        {
            **segment,
            "speaker": renamed(segment.get("speaker")),
            "words": [{**word, "speaker": renamed(word.get("speaker"))} for word in segment.get("words", [])],
        }
        for segment in result.get("segments", [])
    ]
    renamed_result = {**result, "segments": segments}
    if result.get("speakers") is not None:
        renamed_result["speakers"] = [
            {**entry, "speaker": renamed(entry["speaker"]), "label": entry.get("label", entry["speaker"])}
            for entry in result["speakers"]
        ]
    if result.get("voiceprints") is not None:
        prints = result["voiceprints"]
        renamed_result["voiceprints"] = {
            **prints, "speakers": {renamed(label): vector for label, vector in prints["speakers"].items()}
        }  # fmt: skip
    return renamed_result


def identify_speakers(result: dict[str, Any], voices: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A result whose speakers that match an enrolled voice carry its name.

    `result["voiceprints"]` holds each label's embedding and its encoder; only voices embedded by
    the same encoder are compared. Every entry of `speakers` gets its best `match` and `score`.
    """
    prints = result.get("voiceprints")
    if not prints or result.get("speakers") is None:
        return result
    comparable = [voice for voice in voices if voice["encoder"] == prints["encoder"]]
    matches = {
        entry["speaker"]: entry
        for entry in best_matches(prints["speakers"], comparable, threshold_for(prints["encoder"]))
    }
    annotated = {
        **result,
        "speakers": [
            {**entry, "match": matches.get(entry["speaker"], {}).get("match"),
             "score": matches.get(entry["speaker"], {}).get("score")}
            for entry in result["speakers"]
        ],
    }  # fmt: skip
    names = {label: entry["match"] for label, entry in matches.items() if entry["identified"]}
    return rename_speakers(annotated, names)
