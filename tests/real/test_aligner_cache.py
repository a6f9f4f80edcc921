"""torchaudio's aligners (whisperX's for en, fr, de, es, it) load from a pre-filled TORCH_HOME with no network.

No real checkpoint ships in a package, so the one placed there has random weights in the real
architecture, saved under the file name torchaudio expects: it proves the plumbing (found, loaded,
aligning), not the times.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from app.config import Settings
from app.models.hub import fetch_aligner, torchaudio_checkpoint


def _random_checkpoint(bundle_name: str, target: Path) -> Path:
    """A state dict of the bundle's architecture with random weights (float16, to halve the file)."""
    import torch
    import torchaudio  # type: ignore[import-untyped]

    bundle = getattr(torchaudio.pipelines, bundle_name)
    params = dict(bundle._params)
    # torchaudio drops these output rows from the checkpoint it downloads (fairseq's extra symbols).
    params["aux_num_out"] += len(getattr(bundle, "_remove_aux_axis", ()))
    model = torchaudio.models.wav2vec2_model(**params)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save({key: value.half() for key, value in model.state_dict().items()}, target)
    return target


def test_english_aligner_from_a_prefilled_torch_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, short_speech: Path
) -> None:
    import whisperx

    checkpoint = torchaudio_checkpoint("WAV2VEC2_ASR_BASE_960H")
    assert checkpoint == "wav2vec2_fairseq_base_ls960_asr_ls960.pth"
    torch_home = tmp_path / "torch"
    _random_checkpoint("WAV2VEC2_ASR_BASE_960H", torch_home / "hub" / "checkpoints" / checkpoint)
    monkeypatch.setenv("TORCH_HOME", str(torch_home))

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("a network connection was attempted")

    # Downloads allowed: the cache is what keeps it off the network.
    monkeypatch.setattr(socket.socket, "connect", refuse)
    settings = Settings(_env_file=None, model_cache_dir=tmp_path / "cache", offline=False)  # type: ignore[call-arg]
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    aligner = fetch_aligner("en", settings)
    assert aligner is not None
    assert (aligner.model_name, aligner.model_dir) == ("WAV2VEC2_ASR_BASE_960H", str(checkpoint_dir(torch_home)))

    model, metadata = whisperx.load_align_model("en", "cpu", model_name=aligner.model_name, model_dir=aligner.model_dir)
    assert metadata["type"] == "torchaudio"
    assert len(metadata["dictionary"]) == 29
    import torch

    with torch.inference_mode():
        emissions, _ = model(torch.from_numpy(whisperx.load_audio(str(short_speech)))[None])
    assert emissions.shape[-1] == 29  # one score per character, per 20 ms frame: what alignment reads


def checkpoint_dir(torch_home: Path) -> Path:
    return torch_home / "hub" / "checkpoints"


def test_an_uncached_torchaudio_aligner_offline_is_refused_before_it_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.models.hub import ModelUnavailable

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    settings = Settings(_env_file=None, model_cache_dir=tmp_path / "cache", offline=True)  # type: ignore[call-arg]
    with pytest.raises(ModelUnavailable, match=r"python -m app\.models pull align:fr"):
        fetch_aligner("fr", settings)
