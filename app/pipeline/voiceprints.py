"""Speaker embeddings for enrolled voices: of an audio sample, and of each speaker a diarizer found.

Both use the embedded diarizer's encoder (Resemblyzer's GE2E) the same way: the speech is
gathered into one waveform and embedded like Resemblyzer's `embed_utterance`. A speaker's
embedding comes from the turns the diarizer gave it, whatever clustering produced them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from app.media import SAMPLE_RATE, decode
from app.voices.errors import SampleError

if TYPE_CHECKING:  # torch and pyannote load only once a sample has passed the checks
    import pandas as pd  # type: ignore[import-untyped]  # no pandas-stubs in the dev requirements

    from app.pipeline.diarizers import ResemblyzerEmbedding

MIN_SAMPLE_SPEECH_SECONDS = 3.0
"""Less speech than this gives an embedding too unsteady to recognise a voice by."""
MAX_SPEAKER_SECONDS = 120.0
"""Speech embedded per speaker: enough for a steady embedding, and bounded on long recordings."""


def embed(encoder: ResemblyzerEmbedding, speech: np.ndarray) -> list[float] | None:
    """The unit-length embedding of speech (16 kHz mono); None when there is too little of it."""
    import torch

    with torch.inference_mode():
        waveform = torch.from_numpy(np.ascontiguousarray(speech, dtype=np.float32))[None, None].to(encoder.device)
        row = encoder(waveform)[0].cpu().numpy()
    return None if np.isnan(row).any() else [float(value) for value in row]


def speaker_embeddings(encoder: ResemblyzerEmbedding, audio: np.ndarray, turns: pd.DataFrame) -> dict[str, list[float]]:
    """Each speaker label's embedding, from its turns (at most MAX_SPEAKER_SECONDS of them)."""
    embeddings = {}
    for label, rows in turns.sort_values("start").groupby("speaker"):
        pieces, total = [], 0
        for start, end in zip(rows["start"], rows["end"], strict=True):
            piece = audio[round(start * SAMPLE_RATE) : round(end * SAMPLE_RATE)]
            pieces.append(piece[: max(0, round(MAX_SPEAKER_SECONDS * SAMPLE_RATE) - total)])
            total += pieces[-1].size
        if total and (embedding := embed(encoder, np.concatenate(pieces))) is not None:
            embeddings[str(label)] = embedding
    return embeddings


def speech_only(audio: np.ndarray) -> np.ndarray:
    """The speech in audio, its pauses cut out, found by faster-whisper's packaged Silero VAD."""
    from faster_whisper.vad import get_speech_timestamps

    chunks = get_speech_timestamps(audio)
    if not chunks:
        return audio[:0]
    return np.concatenate([audio[chunk["start"] : chunk["end"]] for chunk in chunks])


_encoder: ResemblyzerEmbedding | None = None


def embed_sample(path: Path, ffmpeg_timeout: float, max_seconds: float) -> list[float]:
    """The embedding of a voice sample file; SampleError when it is not MIN_SAMPLE_SPEECH_SECONDS of speech.

    Runs in the enrolment process, which keeps the encoder loaded between samples.
    """
    global _encoder  # one encoder per enrolment process, loaded on first use
    speech = speech_only(decode(path, ffmpeg_timeout, max_seconds))
    seconds = speech.size / SAMPLE_RATE
    if seconds < MIN_SAMPLE_SPEECH_SECONDS:
        raise SampleError(
            f"file: the sample has {seconds:.1f} s of speech; a voice needs at least "
            f"{MIN_SAMPLE_SPEECH_SECONDS:g} s of one person speaking"
        )
    if _encoder is None:
        import torch

        from app.pipeline.diarizers import ResemblyzerEmbedding

        torch.set_num_threads(1)
        _encoder = ResemblyzerEmbedding()
    embedding = embed(_encoder, speech)
    if embedding is None:
        raise SampleError("file: no voice could be measured in the sample; send clearer speech of one person")
    return embedding
