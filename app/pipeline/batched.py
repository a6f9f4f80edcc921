"""faster-whisper's batched transcription, reading each batch's languages from its own encoding.

With no language given, faster-whisper (like whisperx) encodes the first 30 s once more just to
detect the language, and a check for a second language would need more encoder passes still.
Whisper's language detection is one decoder step on an encoder output, and the transcription
encodes every window of speech anyway: so here each batch's encoder output also gives each
window's language probabilities (CTranslate2's `Whisper.detect_language` accepts encoder output),
the file's language is decided on the first batch before it is decoded, and no extra window is
encoded. Only worker processes import this module (it loads CTranslate2).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ctranslate2
import numpy as np
from faster_whisper import BatchedInferencePipeline

from app.media import SAMPLE_RATE
from app.pipeline.languages import SLICE_SECONDS, Window, likeliest, slice_spans

FRAMES_PER_SECOND = 50
"""Whisper's encoder output: 1,500 frames for a 30-s window."""


class _Encoded:
    """A `WhisperModel` whose `encode` returns the encoder output already computed for this batch."""

    def __init__(self, model: Any, encoder_output: Any) -> None:
        self._model, self._encoder_output = model, encoder_output

    def encode(self, features: Any) -> Any:
        return self._encoder_output

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def _frames(encoder_output: Any, spans: list[tuple[int, float]]) -> Any:
    """The encoder output's frames for each (window, start second) span, SLICE_SECONDS long, stacked
    into one StorageView, on the device the encoder output is on."""
    length = round(SLICE_SECONDS * FRAMES_PER_SECOND)
    first = [min(round(start * FRAMES_PER_SECOND), encoder_output.shape[1] - length) for _, start in spans]
    if encoder_output.device == "cuda":  # through torch, which reads CTranslate2's CUDA array interface
        import torch

        tensor = torch.as_tensor(encoder_output, device="cuda")
        stacked = torch.stack([tensor[i, f : f + length] for (i, _), f in zip(spans, first, strict=True)])
        return ctranslate2.StorageView.from_array(stacked.contiguous())
    array = np.asarray(encoder_output)
    stacked_array = np.stack([array[i, f : f + length] for (i, _), f in zip(spans, first, strict=True)])
    return ctranslate2.StorageView.from_array(np.ascontiguousarray(stacked_array))


class DetectingPipeline(BatchedInferencePipeline):  # type: ignore[misc]
    """A batched pipeline for one slice of a file that records the language probabilities of each
    stretch of SLICE_SECONDS of the speech it encodes (`windows`), read from the encoder output.

    `decide`, when the language is still to be found, is called once with the language detected on
    the first batch (before that batch is decoded, which is then decoded in it) and returns whether
    Whisper should time the words (no alignment model for that language). Call `transcribe` with
    some language (it is replaced) so faster-whisper does not detect it with an encoder pass of its own.
    """

    model: Any  # the faster-whisper `WhisperModel`, set by the base class

    def __init__(self, model: Any, offset: float, decide: Callable[[str], bool] | None) -> None:
        super().__init__(model)
        self.offset = offset
        self.windows: list[Window] = []
        self.language: str | None = None
        self._decide = decide
        self._metadata: list[dict[str, Any]] = []

    def forward(self, features: Any, tokenizer: Any, chunks_metadata: Any, options: Any) -> Any:
        self._metadata = list(chunks_metadata)
        return super().forward(features, tokenizer, chunks_metadata, options)

    def _speech_start(self, index: int) -> float:
        segments = self._metadata[index]["segments"]
        return float(segments[0]["start"]) / SAMPLE_RATE if segments else 0.0

    def generate_segment_batched(self, features: Any, tokenizer: Any, options: Any) -> Any:
        encoder_output = self.model.encode(features)
        spans = [
            (index, start, seconds)
            for index, chunk in enumerate(self._metadata)
            for start, seconds in slice_spans(chunk["duration"])
        ]
        # One decoder step for every stretch of the batch at once: the language tokens' probabilities.
        found = self.model.model.detect_language(_frames(encoder_output, [(i, start) for i, start, _ in spans]))
        batch = [
            Window(
                # About where in the file: the window's first speech, plus the stretch's start counted in speech.
                self.offset + self._speech_start(index) + start,
                seconds,
                {token[2:-2]: probability for token, probability in result},
            )
            for (index, start, seconds), result in zip(spans, found, strict=True)
            if seconds > 0  # faster-whisper may pass an empty window (before a VAD chunk over 30 s)
        ]
        self.windows += batch
        if self._decide is not None and batch:
            self.language = likeliest(batch)[0]
            # The tokenizer and options are the objects faster-whisper reads for every batch of this call.
            tokenizer.language = tokenizer.tokenizer.token_to_id(f"<|{self.language}|>")
            tokenizer.language_code = self.language
            options.word_timestamps = self._decide(self.language)
            self._decide = None
        model = self.model
        self.model = _Encoded(model, encoder_output)
        try:
            return super().generate_segment_batched(features, tokenizer, options)
        finally:
            self.model = model
