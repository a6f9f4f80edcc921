"""bench.voice_count's reading of a dendrogram: where a file becomes one speaker, and where it keeps k."""

from __future__ import annotations

import numpy as np

from bench.voice_count import heights


def _voices(centres: list[np.ndarray], per_voice: int, spread: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = [centre + spread * rng.standard_normal((per_voice, centre.size)) for centre in centres]
    return np.concatenate(rows).astype(np.float32)


def test_two_far_voices_are_kept_apart_up_to_the_distance_between_them() -> None:
    first, second = np.eye(8)[0], np.eye(8)[1]  # unit vectors sqrt(2) apart
    one_from, kept_below = heights(_voices([first, second], 20, 0.01), speakers=2, min_cluster_size=12)
    assert kept_below == one_from
    assert 1.3 < one_from < 1.5


def test_a_small_outlier_group_is_not_a_speaker_of_its_own() -> None:
    """Three stray embeddings far from the rest stay under min_cluster_size: one speaker early on."""
    main, stray = np.eye(8)[0], np.eye(8)[1]
    embeddings = np.concatenate([_voices([main], 40, 0.01), _voices([stray], 3, 0.01, seed=1)])
    one_from, kept_below = heights(embeddings, speakers=1, min_cluster_size=12)
    assert kept_below is None
    assert one_from < 0.2  # the stray group's distance (about 1.4) never decides the count
