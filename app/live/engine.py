"""What a live session needs from models: speech probability per 32-ms window, text for a stretch
of speech, and a voiceprint. Runs in the live worker process (worker.py), the only place the live
models are loaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from app.config import Settings

VAD_WINDOW = 512
"""Samples (16 kHz) per speech-probability window: 32 ms, Silero's frame."""
FINAL_BEAMS = 5
MIN_EMBED_SECONDS = 1.0
"""Shorter utterances carry too little voice for a voiceprint; they keep the previous speaker's label."""


class LiveEngine(Protocol):
    def speech_probabilities(self, audio: np.ndarray) -> list[float]:
        """One probability per VAD_WINDOW of `audio` (16 kHz mono float32, a multiple of VAD_WINDOW long)."""
        ...

    def transcribe(self, audio: np.ndarray, language: str | None, prompt: str | None, final: bool) -> str:
        """The text of `audio`; `final`: the utterance's last word, worth a wider search than a partial."""
        ...

    def embed(self, audio: np.ndarray) -> list[float] | None:
        """A unit voiceprint of the speech in `audio`, by the embedded encoder; None when too short."""
        ...


LiveEngineFactory = Callable[[Settings], LiveEngine]
"""Builds the engine in the live worker; importable by name, since the worker is spawned."""


class WhisperLiveEngine:
    """faster-whisper on LIVE_MODEL, Silero VAD (the ONNX model faster-whisper ships), the Resemblyzer encoder."""

    def __init__(self, settings: Settings) -> None:
        import faster_whisper
        from faster_whisper.vad import get_vad_model

        from app.pipeline.models import resolve_whisper_model

        threads = settings.cpu_threads or max(1, (os.cpu_count() or 1) // 2)
        self._model = faster_whisper.WhisperModel(
            resolve_whisper_model(settings.live_model, settings), "cpu", compute_type="int8", cpu_threads=threads
        )
        self._english_only = not self._model.model.is_multilingual
        self._vad: Any = get_vad_model()
        self._encoder: Any = None

    def speech_probabilities(self, audio: np.ndarray) -> list[float]:
        if not len(audio):
            return []
        return [float(p) for p in np.asarray(self._vad(audio.astype(np.float32), VAD_WINDOW)).reshape(-1)]

    def transcribe(self, audio: np.ndarray, language: str | None, prompt: str | None, final: bool) -> str:
        # Partials are greedy (several a second); a final searches 5 beams, once per utterance.
        segments, _ = self._model.transcribe(
            audio.astype(np.float32), language="en" if self._english_only else language, initial_prompt=prompt,
            beam_size=FINAL_BEAMS if final else 1, vad_filter=False, condition_on_previous_text=False,
            without_timestamps=True,
        )  # fmt: skip
        return "".join(segment.text for segment in segments).strip()

    def embed(self, audio: np.ndarray) -> list[float] | None:
        if len(audio) < MIN_EMBED_SECONDS * 16000:
            return None
        if self._encoder is None:  # torch and the encoder load with the first voiceprint
            import torch

            from app.pipeline.diarizers import ResemblyzerEmbedding

            torch.set_num_threads(1)
            self._encoder = ResemblyzerEmbedding()
        from app.pipeline.voiceprints import embed

        return embed(self._encoder, audio.astype(np.float32))


def whisper_live_engine(settings: Settings) -> LiveEngine:
    return WhisperLiveEngine(settings)
