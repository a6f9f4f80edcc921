"""Where to cut a long recording into slices that are transcribed one after another.

faster-whisper's batched pipeline runs its VAD over the whole input and cuts every speech chunk
out of it before it decodes the first one, so its memory grows with the length of the file.
Slices of a few minutes bound that by the slice. Each cut goes at the quietest moment near a
slice boundary, a pause between words, so no word is split in two.
"""

from __future__ import annotations

import numpy as np

from app.media import SAMPLE_RATE

SLICE_SECONDS = 300.0
"""Measured on 2 CPU cores: 5-minute slices keep the VAD's and the features' memory near
what a 5-minute file needs, and each extra cut wastes at most one part-filled 30-s chunk."""
SEARCH_SECONDS = 15.0
"""How far from a boundary a cut may move to find a pause."""
FRAME_SECONDS = 0.1
"""Length of the stretch whose energy is compared: shorter than a pause between phrases."""


def slice_bounds(
    audio: np.ndarray, slice_seconds: float = SLICE_SECONDS, search_seconds: float = SEARCH_SECONDS
) -> list[tuple[int, int]]:
    """(start, end) sample indexes of consecutive slices covering `audio` (16 kHz), each about
    `slice_seconds` long; a recording shorter than a slice and its search margin is one slice."""
    size, search = round(slice_seconds * SAMPLE_RATE), round(search_seconds * SAMPLE_RATE)
    frame = round(FRAME_SECONDS * SAMPLE_RATE)
    bounds = []
    start = 0
    while len(audio) - start > size + search:
        low = start + size - search
        frames = audio[low : low + (2 * search // frame) * frame].reshape(-1, frame)
        # Sum of squares per frame without squaring a copy of the samples.
        quietest = int(np.argmin(np.einsum("ij,ij->i", frames, frames)))
        cut = low + quietest * frame + frame // 2
        bounds.append((start, cut))
        start = cut
    bounds.append((start, len(audio)))
    return bounds
