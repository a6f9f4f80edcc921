"""How far each recording sits from the embedded diarizer's "more than one voice here" decision.

The embedded diarizer's speaker count is decided by pyannote's agglomerative clustering of short
embeddings (app/pipeline/diarizers.py): unit-length Resemblyzer embeddings, centroid linkage, cut
at `threshold`; clusters smaller than `min_cluster_size` (scaled down to a tenth of the embeddings
on short files) are not speakers of their own. So a file keeps k speakers while the threshold is
below the height where its k-th large cluster would merge away, and becomes one speaker once the
threshold reaches the height where its second large cluster merges away.

For each file (the real recordings of tests/data/real and the espeak-ng dialogues of
bench/diarization.py) this prints, from the embeddings the clustering was given:
- `one speaker from`: the lowest threshold at which the file would be one speaker;
- `k kept below`: for a file of k > 1 speakers, the threshold under which k large clusters remain;
- the margin of the shipped threshold: positive when the file gets its true count from this step.
Then, per group, the tightest file on each side. Tune only on the tuning half; quote the held-out.

Run from the repository root:  python -m bench.voice_count [--split tuning|held-out|all] [--no-dialogues]
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.media import decode


@dataclass(frozen=True)
class Heights:
    group: str
    file: str
    speakers: int
    embeddings: int
    one_speaker_from: float
    """The lowest threshold at which at most one large cluster remains."""
    all_kept_below: float | None
    """For files of k > 1 speakers: the threshold under which k large clusters remain (None: never)."""


def _large_clusters(dendrogram: np.ndarray, threshold: float, min_size: int) -> int:
    from scipy.cluster.hierarchy import fcluster

    _, sizes = np.unique(fcluster(dendrogram, threshold, criterion="distance"), return_counts=True)
    return int((sizes >= min_size).sum())


def heights(embeddings: np.ndarray, speakers: int, min_cluster_size: int) -> tuple[float, float | None]:
    """(one speaker from, all k kept below) for the clustering's embeddings, as pyannote cuts them.

    A cut at a merge's height includes that merge; so k large clusters are kept for thresholds
    below the first merge after the last cut that still has k, and the file is one speaker from
    the first merge after the last cut with two or more."""
    from scipy.cluster.hierarchy import linkage

    units = embeddings[~np.isnan(embeddings).any(axis=1)]
    units = units / np.linalg.norm(units, axis=1, keepdims=True)
    min_size = min(min_cluster_size, max(1, round(0.1 * len(units))))
    dendrogram = linkage(units, method="centroid", metric="euclidean")
    merges = np.unique(dendrogram[:, 2])  # ascending
    counts = [_large_clusters(dendrogram, float(height), min_size) for height in merges]

    def first_merge_after_last_cut_with(at_least: int) -> float | None:
        last = max((index for index, count in enumerate(counts) if count >= at_least), default=None)
        if last is None:
            return None
        return float(merges[last + 1]) if last + 1 < len(merges) else float("inf")

    one_from = first_merge_after_last_cut_with(2)
    kept_below = first_merge_after_last_cut_with(speakers) if speakers > 1 else None
    return (0.0 if one_from is None else one_from), kept_below


def measure(group: str, name: str, audio: np.ndarray, speakers: int, diarizer: Any) -> Heights:
    """Diarize once, keeping a copy of what the clustering was given (pyannote normalises it in place)."""
    clustering = diarizer._pipeline.clustering
    given: list[np.ndarray] = []
    original = type(clustering).cluster

    def recording_cluster(embeddings: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
        given.append(embeddings.copy())
        return original(clustering, embeddings, *args, **kwargs)

    clustering.cluster = recording_cluster
    try:
        diarizer(audio)
    finally:
        del clustering.cluster
    (embeddings,) = given
    one_from, kept_below = heights(embeddings, speakers, clustering.min_cluster_size)
    return Heights(group, name, speakers, len(embeddings), one_from, kept_below)


def _real(split: str) -> Iterator[tuple[str, str, np.ndarray, int]]:
    from bench.real import recordings

    for recording in recordings(split):
        yield recording.split, recording.id, decode(recording.path, 60, 3600), recording.speakers


def _dialogues(workdir: Path) -> Iterator[tuple[str, str, np.ndarray, int]]:
    from bench.diarization import dialogue

    for voices in (2, 3, 4):
        for gap in (0.0, 0.5):
            case = dialogue(voices, gap, workdir)
            yield "espeak", case.name, case.audio, voices


def summarise(rows: list[Heights], threshold: float) -> None:
    print(f"\nthreshold {threshold}")
    for group in sorted({row.group for row in rows}):
        ones = [row for row in rows if row.group == group and row.speakers == 1]
        many = [row for row in rows if row.group == group and row.speakers > 1 and row.all_kept_below is not None]
        parts = []
        if ones:
            worst = max(ones, key=lambda row: row.one_speaker_from)
            parts.append(f"one speaker: highest 'from' {worst.one_speaker_from:.3f} ({worst.file})")
        if many:
            worst = min(many, key=lambda row: row.all_kept_below or 0.0)
            parts.append(f"several: lowest 'kept below' {worst.all_kept_below:.3f} ({worst.file})")
        print(f"{group:<9} " + "; ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="all", choices=["tuning", "held-out", "all"])
    parser.add_argument("--no-dialogues", action="store_true", help="real recordings only")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from app.pipeline.diarizers import HYPER_PARAMETERS, EmbeddedDiarizer

    torch.set_num_threads(args.threads)
    threshold = float(HYPER_PARAMETERS["clustering"]["threshold"])
    rows: list[Heights] = []
    with tempfile.TemporaryDirectory(prefix="bench-voice-count-") as scratch:
        workdir = Path(scratch)
        diarizer = EmbeddedDiarizer("cpu", workdir)
        print(f"{'group':<9} {'file':<20} {'true':>4} {'emb':>4} {'one speaker from':>16} {'k kept below':>12}  margin")
        files = _real(args.split) if args.no_dialogues else (*_real(args.split), *_dialogues(workdir))
        for group, name, audio, speakers in files:
            row = measure(group, name, audio, speakers, diarizer)
            rows.append(row)
            if speakers == 1:
                kept, margin = "-", threshold - row.one_speaker_from
            else:
                kept = "never" if row.all_kept_below is None else f"{row.all_kept_below:.3f}"
                margin = (row.all_kept_below or 0.0) - threshold
            print(
                f"{group:<9} {name:<20} {speakers:>4} {row.embeddings:>4} {row.one_speaker_from:>16.3f} {kept:>12}"
                f"  {margin:+.3f}",
                flush=True,
            )
    summarise(rows, threshold)


if __name__ == "__main__":
    main()
