"""Cutting long recordings into slices: cuts fall in pauses, slices cover every sample once."""

from __future__ import annotations

import itertools

import numpy as np

from app.media import SAMPLE_RATE
from app.pipeline.slicing import slice_bounds


def _noise(seconds: float, pauses: list[tuple[float, float]]) -> np.ndarray:
    """Loud noise with silent stretches at the given (start, end) seconds."""
    audio = np.random.default_rng(7).uniform(-0.5, 0.5, round(seconds * SAMPLE_RATE)).astype(np.float32)
    for start, end in pauses:
        audio[round(start * SAMPLE_RATE) : round(end * SAMPLE_RATE)] = 0.0
    return audio


def test_a_recording_shorter_than_a_slice_and_its_margin_is_one_slice() -> None:
    audio = _noise(11.5, [])
    assert slice_bounds(audio, slice_seconds=10, search_seconds=2) == [(0, len(audio))]


def test_cuts_fall_in_the_pause_nearest_each_boundary() -> None:
    pauses = [(8.6, 8.9), (19.1, 19.4), (28.9, 29.2)]
    audio = _noise(40, pauses)
    bounds = slice_bounds(audio, slice_seconds=10, search_seconds=2)
    cuts = [end / SAMPLE_RATE for _, end in bounds[:-1]]
    assert len(cuts) == 3
    for cut, (start, end) in zip(cuts, pauses, strict=True):
        assert start <= cut <= end


def test_slices_cover_every_sample_once_and_stay_near_their_length() -> None:
    audio = _noise(95.3, [])
    bounds = slice_bounds(audio, slice_seconds=10, search_seconds=2)
    assert bounds[0][0] == 0
    assert bounds[-1][1] == len(audio)
    assert all(end == next_start for (_, end), (next_start, _) in itertools.pairwise(bounds))
    assert all(8 * SAMPLE_RATE <= end - start <= 12 * SAMPLE_RATE for start, end in bounds[:-1])
    assert bounds[-1][1] - bounds[-1][0] <= 12 * SAMPLE_RATE
