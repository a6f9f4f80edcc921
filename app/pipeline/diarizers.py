"""Speaker diarization with no HF token and no network: only weights that ship inside pip packages.

A pyannote.audio 4 `SpeakerDiarization` pipeline assembled from local objects:
- segmentation: the pyannote/segmentation checkpoint that whisperx ships for its VAD;
- speaker embeddings: Resemblyzer's pretrained GE2E encoder, wrapped as a pyannote `Model`;
- clustering: agglomerative (pyannote's VBx needs a trained PLDA, which no package ships).

`EmbeddedDiarizer` is called like `whisperx.diarize.DiarizationPipeline`, so its output goes
straight into `whisperx.assign_word_speakers`.
"""

from __future__ import annotations

import importlib.util
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd  # type: ignore[import-untyped]  # no pandas-stubs in the dev requirements
import torch
import torch.nn.functional as F
import torchaudio  # type: ignore[import-untyped]
from pyannote.audio import Model
from pyannote.audio.core.plda import PLDA
from pyannote.audio.pipelines import SpeakerDiarization
from pyannote.audio.pipelines.clustering import AgglomerativeClustering
from pyannote.audio.pipelines.speaker_diarization import DiarizeOutput
from pyannote.core import Annotation, Segment

SAMPLE_RATE = 16000

EMBEDDED_DIARIZER = "embedded:pyannote-segmentation+resemblyzer"
"""How results and /health name this diarizer."""

# Tuned by grid search on the espeak-ng dialogues and pyannote's sample together (bench/diarization.py).
HYPER_PARAMETERS: dict[str, dict[str, Any]] = {
    # min_duration_off is pyannote's 2.x value for this checkpoint; a higher threshold than its
    # 0.4442 marks fewer overlaps where one voice hands over to the next.
    "segmentation": {"threshold": 0.65, "min_duration_off": 0.5817},
    # Resemblyzer embeddings are non-negative, so speakers sit closer than pyannote's defaults assume;
    # 0.47-0.49 worked on every file, 0.45 split voices and 0.50 merged the sample's two speakers.
    "clustering": {"method": "centroid", "threshold": 0.48, "min_cluster_size": 12},
}
# On long files a voice's embeddings spread, and small pieces of it pass min_cluster_size as extra
# speakers. A cluster with less than FOLD_SHARE of the file's embeddings whose centroid is at least
# FOLD_SIMILARITY (cosine) to a larger cluster's is folded into it. Measured on the benchmark's 5-
# and 10-minute meetings clustered at thresholds 0.36-0.48: pieces split off one voice 0.80-0.95
# (median 0.91) from their voice, 15-39 embeddings (1-3 %); clusters of distinct voices at most
# 0.79 apart; a guest's one 5-s turn 14 embeddings (1.7 %), 0.63-0.65 from the hosts.
FOLD_SHARE = 0.05
FOLD_SIMILARITY = 0.8
SILENCE_DB = 40  # a frame this far below the loud speech frames is silence
SILENCE_MIN_FRAMES = 20  # 0.2 s: a shorter silence between two speakers is left to the turns around it
# Long audio is worked through in pieces of bounded size, so memory does not grow with its length.
BLOCK_FRAMES = 6000  # 60 s of 10 ms frames
LSTM_BATCH = 512  # resegmentation windows through the encoder at once


def _package_file(package: str, *parts: str) -> Path:
    """A file inside an installed package, found without importing it (imports can be slow)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)), *parts)


class ResemblyzerEmbedding(Model):
    """Resemblyzer's GE2E speaker encoder (LSTM 40→256 ×3, Linear 256) as a pyannote embedding model.

    `forward(waveforms (B, 1, N), weights (B, F) | None) -> (B, 256)`: the frames that `weights`
    marks as the speaker's are embedded the way Resemblyzer's `embed_utterance` does; a row is NaN
    when there is too little speech, and pyannote then leaves that (chunk, speaker) out.
    """

    dimension = 256
    window_frames = 160  # 1.6 s, the partial-utterance length the encoder was trained on
    window_step = 80
    min_frames = 20  # below 0.2 s of speech an embedding is noise
    target_rms = 10 ** (-30 / 20)  # Resemblyzer normalises input to -30 dBFS (increase only)
    # Resegmentation windows: 0.8 s, half the training length, to place speaker changes more sharply.
    reseg_window = 80
    reseg_step = 10

    def __init__(self) -> None:
        super().__init__(sample_rate=SAMPLE_RATE, num_channels=1)
        # Resemblyzer feeds its network a power mel spectrogram (no log): 25 ms / 10 ms, 40 bands,
        # librosa's defaults (Slaney scale and norm, zero padding).
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE, n_fft=400, hop_length=160, n_mels=40,
            power=2.0, norm="slaney", mel_scale="slaney", pad_mode="constant",
        )  # fmt: skip
        self.lstm = torch.nn.LSTM(40, 256, num_layers=3, batch_first=True)
        self.linear = torch.nn.Linear(256, 256)
        state = torch.load(_package_file("resemblyzer", "pretrained.pt"), map_location="cpu", weights_only=True)
        # The checkpoint also holds GE2E's training-only similarity scale and bias.
        weights = {k: v for k, v in state["model_state"].items() if k.startswith(("lstm.", "linear."))}
        self.load_state_dict(weights, strict=False)
        self.eval()

    def forward(self, waveforms: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        batch_size, _, num_samples = waveforms.shape
        mels = self.mel(waveforms[:, 0]).transpose(1, 2)  # (B, T, 40)
        num_frames = mels.shape[1]
        if weights is None:
            masks = torch.ones(batch_size, num_frames, dtype=torch.bool, device=waveforms.device)
        else:
            masks = F.interpolate(weights[:, None].float(), size=num_frames, mode="linear")[:, 0] > 0.5

        windows: list[torch.Tensor] = []
        owners: list[int] = []
        for b in range(batch_size):
            if int(masks[b].sum()) < self.min_frames:
                continue
            # Level the speaker's own samples, then keep only their frames (as Resemblyzer trims silences).
            speech = waveforms[b, 0, torch.repeat_interleave(masks[b], 160)[:num_samples]]
            gain = max(1.0, self.target_rms / max(float(speech.pow(2).mean().sqrt()), 1e-8))
            frames = mels[b, masks[b]] * gain**2
            for window in self._windows(frames):
                windows.append(window)
                owners.append(b)

        embeddings = torch.full((batch_size, self.dimension), torch.nan, device=waveforms.device)
        if not windows:
            return embeddings
        partials = self._embed(torch.stack(windows))
        index = torch.tensor(owners, device=waveforms.device)
        sums = torch.zeros(batch_size, self.dimension, device=waveforms.device).index_add_(0, index, partials)
        rows = torch.tensor(sorted(set(owners)), device=waveforms.device)
        embeddings[rows] = F.normalize(sums[rows], dim=1)
        return embeddings

    @torch.inference_mode()
    def frame_scores(
        self, waveform: torch.Tensor, speech: np.ndarray, centroids: np.ndarray,
        done: Callable[[float], None] | None = None,
    ) -> np.ndarray:  # fmt: skip
        """Cosine similarity of every 10 ms frame to each speaker centroid, (K, T), T = len(speech).

        Short windows (0.8 s, centred every 0.1 s of speech) are embedded, and each frame gets the
        mean score of the windows that cover it; 0 where no window does. `done` is told the share
        of the windows embedded after each batch.
        """
        scores = np.zeros((len(centroids), len(speech)))
        centers = np.flatnonzero(speech)[:: self.reseg_step]
        if centers.size == 0:
            return scores
        waveform = waveform.to(self.device)
        gain = max(1.0, self.target_rms / max(_speech_rms(waveform, speech), 1e-8))
        half = self.reseg_window // 2
        # Zero frames either side, so that every window is reseg_window long.
        mels = torch.zeros(len(speech) + 2 * half, self.mel.n_mels, device=self.device)
        for start, block in self._mel_blocks(waveform):
            mels[half + start : half + start + len(block)] = block
        mels *= gain**2
        centroids_ = F.normalize(torch.from_numpy(centroids).float().to(self.device), dim=1)
        rows = []
        for batch in np.array_split(centers, -(-centers.size // LSTM_BATCH)):
            windows = torch.stack([mels[c : c + self.reseg_window] for c in batch])
            rows.append((self._embed(windows) @ centroids_.T).cpu().numpy())
            if done is not None:
                done(sum(map(len, rows)) / centers.size)
        similarity = np.concatenate(rows)
        covered = np.zeros(len(speech))
        for center, row in zip(centers, similarity, strict=True):
            scores[:, max(0, center - half) : center + half] += row[:, None]
            covered[max(0, center - half) : center + half] += 1
        return scores / np.maximum(covered, 1)

    def _mel_blocks(self, waveform: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        """`self.mel(waveform).T` a block of frames at a time: (first frame, (frames, 40)) pairs.

        Frame t is centred on sample 160·t and reaches 200 samples either side, zero-padded past the
        ends; each block is given the samples around it, so its frames are the whole file's.
        """
        hop, reach = self.mel.hop_length, self.mel.n_fft // 2
        context = -(-reach // hop)  # frames of samples that the block's edge frames reach into
        num_frames = waveform.numel() // hop + 1
        for first in range(0, num_frames, BLOCK_FRAMES):
            last = min(first + BLOCK_FRAMES, num_frames)
            # Starting on a frame's centre keeps the block's frames on the file's; past the file's
            # ends, the transform's own zero padding is the file's.
            start = max(0, first - context)
            block = self.mel(waveform[start * hop : (last - 1 + context) * hop]).T
            yield first, block[first - start : last - start]

    def _embed(self, windows: torch.Tensor) -> torch.Tensor:
        """Unit-length embeddings of mel windows (B, T, 40), one per window (Resemblyzer's partials)."""
        _, (hidden, _) = self.lstm(windows)
        return F.normalize(F.relu(self.linear(hidden[-1])), dim=1)

    def _windows(self, frames: torch.Tensor) -> list[torch.Tensor]:
        """1.6 s windows every 0.8 s; zero-padded at the end, the last dropped if mostly padding."""
        size, step, count = self.window_frames, self.window_step, len(frames)
        starts = list(range(0, max(1, count - size + step + 1), step))
        if len(starts) > 1 and (count - starts[-1]) / size < 0.75:
            starts.pop()
        frames = F.pad(frames, (0, 0, 0, max(0, starts[-1] + size - count)))
        return [frames[start : start + size] for start in starts]


class FoldingClustering(AgglomerativeClustering):
    """pyannote's agglomerative clustering, then each small cluster that sits close to a larger one
    folded into it: a speaker count that does not grow with the length of the file.

    A speaker count the caller fixes is left alone, and folding stops at `min_clusters`.
    """

    def cluster(
        self,
        embeddings: np.ndarray,
        min_clusters: int | None = None,
        max_clusters: int | None = None,
        num_clusters: int | None = None,
    ) -> np.ndarray:
        clusters: np.ndarray = super().cluster(embeddings, min_clusters, max_clusters, num_clusters)
        if num_clusters is not None:
            return clusters
        return fold_small_clusters(embeddings, clusters, keep=min_clusters or 1)


def fold_small_clusters(embeddings: np.ndarray, clusters: np.ndarray, keep: int = 1) -> np.ndarray:
    """`clusters` (one 0-based index per embedding) with small clusters folded into a close larger
    one, the smallest first, while more than `keep` remain; renumbered from 0."""
    clusters = clusters.copy()
    units = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    while True:
        labels, sizes = np.unique(clusters, return_counts=True)
        if len(labels) <= keep:
            break
        centroids = np.stack([units[clusters == label].mean(axis=0) for label in labels])
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
        similarity = centroids @ centroids.T
        for small in np.argsort(sizes):
            if sizes[small] >= FOLD_SHARE * len(clusters):
                return np.unique(clusters, return_inverse=True)[1]
            larger = np.flatnonzero(sizes > sizes[small])
            if larger.size:
                nearest = larger[np.argmax(similarity[small, larger])]
                if similarity[small, nearest] >= FOLD_SIMILARITY:
                    clusters[clusters == labels[small]] = labels[nearest]
                    break
        else:
            break
    return np.unique(clusters, return_inverse=True)[1]


def _identity_plda(cache_dir: Path, dimension: int) -> PLDA:
    """pyannote 4 loads a PLDA even for agglomerative clustering; an identity one changes nothing."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    transform, plda = cache_dir / "xvec_transform.npz", cache_dir / "plda.npz"
    zeros, eye = np.zeros(dimension), np.eye(dimension)
    _save_atomically(transform, mean1=zeros, mean2=zeros, lda=eye)
    _save_atomically(plda, mu=zeros, tr=eye, psi=np.ones(dimension))
    return PLDA(transform, plda)


def _save_atomically(path: Path, **arrays: Any) -> None:
    """Write aside, then rename into place: workers, and other instances sharing MODEL_CACHE_DIR,
    load these files while others write them, and a half-written one fails with EOFError."""
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.stem}-", suffix=".npz", delete=False) as out:
        np.savez(out, **arrays)
    os.replace(out.name, path)


PercentCallback = Callable[[float], None]
"""whisperx's own `progress_callback` shape (percent 0–100), which our diarizers keep so that they
stand in for whisperx's; the pipeline turns it into its stage progress (base.PercentCallback)."""

# pyannote reports two long steps, each counting from 0 again, and the resegmentation follows:
# each gets its share of 0–100 by its time on 2 CPU cores (35, 44 and 21 % on three real meetings
# of 2 to 4 voices), so that the stage's progress runs with its time and its pace can be read from it.
_STEP_RANGES = {"segmentation": (0.0, 35.0), "embeddings": (35.0, 80.0), "resegmentation": (80.0, 100.0)}


class EmbeddedDiarizer:
    """Drop-in for `whisperx.diarize.DiarizationPipeline` built from packaged weights only."""

    def __init__(self, device: str, cache_dir: Path) -> None:
        # 10-s windows per batch. On 2 CPU cores 8 ran as fast as 32 (11 vs 13 s on 5 minutes)
        # and peaked 15 MB above idle instead of 180-290 MB (the segmentation model's first layers).
        batch_size = 32 if device == "cuda" else 8
        segmentation = Model.from_pretrained(_package_file("whisperx", "assets", "pytorch_model.bin"))
        if segmentation is None:
            raise RuntimeError("whisperx's packaged segmentation model could not be loaded")
        self._embedding = embedding = ResemblyzerEmbedding()
        # Model instances, not paths: pyannote routes paths by words such as "pyannote" in them.
        self._pipeline = SpeakerDiarization(
            segmentation=segmentation,
            embedding=embedding,
            plda=_identity_plda(cache_dir, embedding.dimension),
            clustering="AgglomerativeClustering",
            segmentation_batch_size=batch_size,
            embedding_batch_size=batch_size,
        )
        self._pipeline.clustering = FoldingClustering(metric="cosine")
        self._pipeline.instantiate(HYPER_PARAMETERS)
        self._pipeline.to(torch.device(device))

    @property
    def encoder(self) -> ResemblyzerEmbedding:
        """The speaker encoder, for embeddings of whole speakers (app/pipeline/voiceprints.py)."""
        return self._embedding

    def __call__(
        self,
        audio: np.ndarray,
        num_speakers: int | None = None,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
        progress_callback: PercentCallback | None = None,
    ) -> pd.DataFrame:
        """Who spoke when in 16 kHz mono float32 audio: columns segment, label, speaker, start, end."""
        waveform = torch.from_numpy(np.asarray(audio, dtype=np.float32))
        hook = None if progress_callback is None else _progress_hook(progress_callback)
        output = cast(
            DiarizeOutput,
            self._pipeline(
                {"waveform": waveform[None], "sample_rate": SAMPLE_RATE},
                num_speakers=num_speakers, min_speakers=min_speakers, max_speakers=max_speakers, hook=hook,
            ),
        )  # fmt: skip
        diarization = self._resegment(waveform, output.speaker_diarization, output.speaker_embeddings, hook)
        if progress_callback is not None:
            progress_callback(100.0)
        turns = pd.DataFrame(diarization.itertracks(yield_label=True), columns=["segment", "label", "speaker"])
        turns["start"] = turns["segment"].apply(lambda segment: segment.start)
        turns["end"] = turns["segment"].apply(lambda segment: segment.end)
        return turns

    def _resegment(
        self, waveform: torch.Tensor, diarization: Annotation, centroids: np.ndarray | None,
        hook: Callable[..., None] | None = None,
    ) -> Annotation:  # fmt: skip
        """Re-decide who speaks each single-speaker 10 ms frame from short-window embeddings.

        pyannote decides speakers per 5 s chunk and local speaker; with abutting turns its
        segmentation model often merges two voices in a chunk, which shifts or swallows turns.
        Overlapped frames keep pyannote's speakers; true silence around and between turns is dropped.
        """
        labels = diarization.labels()
        num_frames = waveform.numel() // 160 + 1
        active = np.zeros((len(labels), num_frames), dtype=bool)
        for segment, _, label in diarization.itertracks(yield_label=True):
            active[labels.index(label), round(segment.start * 100) : round(segment.end * 100)] = True
        speech = active.sum(axis=0) > 0
        # pyannote's turns spill ~0.2 s into the pauses around them. Silence at a turn's edge is
        # dropped; inside a turn, only as long a silence as pyannote itself would cut there.
        quiet = _quiet_runs(waveform, speech)
        longest_pause = round(100 * HYPER_PARAMETERS["segmentation"]["min_duration_off"])
        for start, end in quiet:
            at_edge = start == 0 or end == num_frames or not speech[start - 1] or not speech[end]
            if at_edge or end - start >= longest_pause:
                active[:, start:end] = False

        single = np.flatnonzero(active.sum(axis=0) == 1)
        if len(labels) > 1 and centroids is not None and single.size:
            done = None if hook is None else lambda share: hook("resegmentation", None, total=1.0, completed=share)
            scores = self._embedding.frame_scores(waveform, active.sum(axis=0) > 0, centroids[: len(labels)], done)
            active[:, single] = False
            active[scores[:, single].argmax(axis=0), single] = True
            # Silence between two speakers, or "overlapped" silence, belongs to nobody, however short.
            for start, end in quiet:
                if end - start < SILENCE_MIN_FRAMES or start == 0 or end == num_frames:
                    continue
                between = (active[:, start - 1] != active[:, end]).any()
                if between or active[:, start:end].sum(axis=0).max() > 1:
                    active[:, start:end] = False

        resegmented = Annotation(uri=diarization.uri)
        for k, label in enumerate(labels):
            for start, end in _runs(active[k]):
                resegmented[Segment(start / 100, end / 100), k] = label  # a track per speaker keeps overlaps
        return resegmented.rename_tracks(generator="string")


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) index pairs of the runs of True in a 1-D boolean array."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def _quiet_runs(waveform: torch.Tensor, speech: np.ndarray) -> list[tuple[int, int]]:
    """Stretches of true silence (SILENCE_DB below the loud speech frames) inside speech, in 10 ms frames.

    In a noisy recording no frame is that quiet and nothing changes.
    """
    if not speech.any():
        return []
    energy = np.full(len(speech), -120.0)  # the last, partial frame counts as silent
    for first, block in _frame_blocks(waveform):
        power = block.double().pow(2).mean(dim=1).cpu().numpy()
        energy[first : first + len(power)] = 10 * np.log10(power + 1e-12)
    return _runs(speech & (energy < np.percentile(energy[speech], 90) - SILENCE_DB))


def _speech_rms(waveform: torch.Tensor, speech: np.ndarray) -> float:
    """RMS level of the samples in the 10 ms frames marked in `speech` (the last frame may be partial)."""
    total, count = 0.0, 0
    for start in range(0, waveform.numel(), BLOCK_FRAMES * 160):
        block = waveform[start : start + BLOCK_FRAMES * 160]
        marked = torch.from_numpy(speech[start // 160 : start // 160 + BLOCK_FRAMES]).to(block.device)
        selected = block[torch.repeat_interleave(marked, 160)[: block.numel()]]
        total += float(selected.double().pow(2).sum())
        count += selected.numel()
    return math.sqrt(total / max(count, 1))


def _frame_blocks(waveform: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
    """The whole 10 ms frames of `waveform` as (first frame, (frames, 160)) views, BLOCK_FRAMES at a time."""
    num_frames = waveform.numel() // 160
    for first in range(0, num_frames, BLOCK_FRAMES):
        last = min(first + BLOCK_FRAMES, num_frames)
        yield first, waveform[first * 160 : last * 160].reshape(-1, 160)


def _progress_hook(progress_callback: PercentCallback) -> Callable[..., None]:
    """A pyannote `hook` that reports monotonic 0–100 progress."""
    last = [0.0]

    def hook(step_name: str, step_artifact: Any, file: Any = None, total: float | None = None,
             completed: float | None = None) -> None:  # fmt: skip
        if total and completed is not None:
            start, end = _STEP_RANGES.get(step_name, (0.0, 99.0))
            percent = start + min(float(completed) / total, 1.0) * (end - start)
            if percent > last[0]:
                last[0] = percent
                progress_callback(percent)

    return hook
