"""The embedded diarizer works through long audio in blocks; block edges must not change its figures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.pipeline import diarizers
from app.pipeline.diarizers import ResemblyzerEmbedding

# Lengths in samples: a block edge inside the audio, a whole number of frames, less than one window.
LENGTHS = [3 * 16000 + 37, 2 * 16000, 250]


@pytest.fixture(scope="module")
def encoder() -> ResemblyzerEmbedding:
    return ResemblyzerEmbedding()


def _noise(num_samples: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(0, 0.1, num_samples).astype(np.float32))


@pytest.mark.parametrize("num_samples", LENGTHS)
def test_blockwise_mel_frames_are_the_whole_files(
    encoder: ResemblyzerEmbedding, num_samples: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(diarizers, "BLOCK_FRAMES", 7)
    waveform = _noise(num_samples)
    whole = encoder.mel(waveform).T
    blocks = list(encoder._mel_blocks(waveform))
    assert [first for first, _ in blocks] == list(range(0, len(whole), 7))
    torch.testing.assert_close(torch.cat([block for _, block in blocks]), whole, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("num_samples", LENGTHS)
def test_blockwise_levels_are_the_whole_files(num_samples: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(diarizers, "BLOCK_FRAMES", 7)
    waveform = _noise(num_samples) * torch.linspace(0, 1, num_samples) ** 4  # quiet start, loud end
    num_frames = num_samples // 160 + 1
    speech = np.random.default_rng(1).random(num_frames) < 0.7
    speech[-1] = True  # the partial last frame's samples count too

    samples = torch.repeat_interleave(torch.from_numpy(speech), 160)[:num_samples]
    assert diarizers._speech_rms(waveform, speech) == pytest.approx(float(waveform[samples].pow(2).mean().sqrt()))

    frames = waveform[: num_samples // 160 * 160].reshape(-1, 160).double()
    energy = np.full(num_frames, -120.0)
    energy[: len(frames)] = 10 * np.log10(frames.pow(2).mean(dim=1).numpy() + 1e-12)
    expected = diarizers._runs(speech & (energy < np.percentile(energy[speech], 90) - diarizers.SILENCE_DB))
    assert expected or num_samples < 16000, "the quiet start should give silent runs"
    assert diarizers._quiet_runs(waveform, speech) == expected


def test_frame_scores_do_not_depend_on_the_block_or_batch_size(
    encoder: ResemblyzerEmbedding, monkeypatch: pytest.MonkeyPatch
) -> None:
    waveform = _noise(4 * 16000 + 99, seed=2)
    speech = np.ones(waveform.numel() // 160 + 1, dtype=bool)
    speech[150:190] = False
    centroids = np.random.default_rng(3).random((2, encoder.dimension)).astype(np.float32)
    whole = encoder.frame_scores(waveform, speech, centroids)
    monkeypatch.setattr(diarizers, "BLOCK_FRAMES", 13)
    monkeypatch.setattr(diarizers, "LSTM_BATCH", 5)
    np.testing.assert_allclose(encoder.frame_scores(waveform, speech, centroids), whole, rtol=1e-5, atol=1e-6)
    assert np.all(whole[:, speech] != 0)
