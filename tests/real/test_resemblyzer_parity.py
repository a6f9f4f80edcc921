"""The embedded diarizer's speaker encoder is Resemblyzer's own network, to within float error.

`ResemblyzerEmbedding` (app/pipeline/diarizers.py) rebuilds Resemblyzer's GE2E encoder (LSTM 40→256 ×3,
Linear, ReLU, L2 norm) from its `pretrained.pt`. Given the same mel windows, both must give the same
partial embeddings. What is built around the network differs by design, so whole-utterance embeddings
are close to `VoiceEncoder.embed_utterance`'s but not equal:
- which frames count: Resemblyzer trims long silences with webrtcvad; ours keeps the frames that
  pyannote's segmentation weights give to one speaker within a chunk (interpolated weight > 0.5);
- windows: Resemblyzer cuts 160-frame partials at `rate=1.3` (every 77 frames) and covers the
  waveform's padded end; ours cuts 160 frames every 80 over the kept frames only (and 80-frame windows
  every 10 frames for frame-level resegmentation);
- level: both raise quiet speech to -30 dBFS, Resemblyzer on the waveform, ours on the speaker's own
  samples, applied to the power mel;
- the utterance embedding: Resemblyzer's is the L2-normed mean of the partials; ours the L2-normed sum,
  the same direction, and NaN under 20 kept frames, which pyannote then leaves out.
"""

from __future__ import annotations

import sys
import types
import warnings
from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from app.media import decode
from app.pipeline.diarizers import ResemblyzerEmbedding

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def resemblyzer_network() -> torch.nn.Module:
    """Resemblyzer's `VoiceEncoder`, with the weights its package ships.

    resemblyzer is installed without its dependencies (requirements-weights.txt), and its package imports
    webrtcvad and librosa for its audio preprocessing, which its network never calls. Empty stand-ins let
    the modules import; `patch.dict` removes them, and resemblyzer's modules, again on leaving.
    """
    stand_ins = {name: types.ModuleType(name) for name in ("webrtcvad", "librosa")}
    with mock.patch.dict(sys.modules, stand_ins), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # its audio module imports an old scipy path
        from resemblyzer.voice_encoder import VoiceEncoder  # type: ignore[import-untyped]

        network: torch.nn.Module = VoiceEncoder("cpu", verbose=False).eval()
    return network


def test_identical_mel_windows_give_resemblyzers_embeddings(
    resemblyzer_network: torch.nn.Module, known_speech: Path
) -> None:
    ours = ResemblyzerEmbedding()
    waveform = torch.from_numpy(decode(known_speech, timeout=60, max_seconds=600))
    mels = ours.mel(waveform).T  # (frames, 40): real speech, about 15 s
    training = torch.stack([mels[start : start + ours.window_frames] for start in range(0, 1200, 80)])
    resegmenting = torch.stack([mels[start : start + ours.reseg_window] for start in range(0, 1200, 40)])

    for windows in (training, resegmenting):
        with torch.inference_mode():
            expected = resemblyzer_network(windows)
            actual = ours._embed(windows)
        torch.testing.assert_close(actual, expected, atol=TOLERANCE, rtol=0)
        # Not a vacuous match: the windows are told apart, as different stretches of speech are.
        similarity = F.normalize(expected, dim=1) @ F.normalize(expected, dim=1).T
        assert similarity[~torch.eye(len(windows), dtype=torch.bool)].min() < 0.95
