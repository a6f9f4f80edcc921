"""The real pipeline: WhisperX transcription, word timing, speaker diarization and assignment.

Runs inside a worker process, the only place torch and whisperx's models are loaded. The API process
imports only `whisperx.utils` (language tables, subtitle writers), which needs no torch.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
from pathlib import Path
from typing import Any

from app.config import Settings
from app.media import SAMPLE_RATE, MediaError, decode
from app.pipeline.base import Job, PipelineError, PipelineInfo, PipelineOutput, ProgressCallback, Stage
from app.pipeline.models import resolve_whisper_model
from app.pipeline.segments import split_segments
from app.pipeline.slicing import slice_bounds

logger = logging.getLogger(__name__)

WORD_TIMING_ALIGNMENT = "wav2vec2-alignment"
WORD_TIMING_WHISPER = "whisper-word-timestamps"


class WhisperXPipeline:
    """Loads the models once, then transcribes job after job with them."""

    def __init__(self, settings: Settings) -> None:
        """Load the Whisper model; `finish_loading` loads the rest (torch and the diarizer)."""
        import ctranslate2
        import faster_whisper

        self._settings = settings
        # CTranslate2 answers without importing torch, which would cost seconds before the model loads.
        cuda = settings.device == "cuda" or (settings.device == "auto" and ctranslate2.get_cuda_device_count() > 0)
        self.device = "cuda" if cuda else "cpu"
        self.compute_type = settings.compute_type
        if self.device == "cpu" and self.compute_type in ("float16", "int8_float16"):
            logger.info("COMPUTE_TYPE=%s is not supported on CPU; using int8", self.compute_type)
            self.compute_type = "int8"
        # Measured on 2 CPU cores, 5 minutes of speech: each 30-s chunk in a batch holds ~100 MB of
        # encoder attention (a peak 190 MB above idle with batches of 2, 470 with 4), and batches
        # of 4 were only ~15 % faster (14.2 against 16.4 s), so 2 keeps a worker smaller. A beam of 2 gave
        # the words of a beam of 5 on the bench's clips, where greedy decoding lost some on the
        # telephone sample, and costs little more than greedy.
        self.batch_size = settings.batch_size or (16 if cuda else 2)
        self.beam_size = settings.beam_size or (5 if cuda else 2)
        self._threads = settings.cpu_threads or max(1, (os.cpu_count() or 1) // settings.max_concurrent_tasks)

        self.model_name = settings.whisper_model or ("large-v2" if cuda else "base")
        # faster-whisper's own model and batched pipeline, with its packaged ONNX silero VAD:
        # whisperx.load_model would also load a pyannote VAD (torch) that runs ~15x slower here.
        self._model = faster_whisper.WhisperModel(
            resolve_whisper_model(self.model_name, settings.model_cache_dir),
            self.device,
            compute_type=self.compute_type,
            cpu_threads=self._threads,
            download_root=str(settings.model_cache_dir / "whisper"),
        )
        self._multilingual = bool(self._model.model.is_multilingual)
        self._batched = faster_whisper.BatchedInferencePipeline(self._model)
        self._numeral_tokens: list[int] | None = None
        self._aligners: dict[str, tuple[Any, dict[str, Any]] | None] = {}
        self._loaded = False
        self._diarizer: Any = None
        self.diarizer_name: str | None = None
        self._diarizer_note: str | None = None

    def finish_loading(self) -> None:
        """Import torch and load the diarizer: most of a worker's start-up, done once, after it is ready."""
        if self._loaded:
            return
        import torch

        torch.set_num_threads(self._threads)
        self._diarizer, self.diarizer_name, self._diarizer_note = self._load_diarizer()
        self._loaded = True

    def info(self) -> PipelineInfo:
        return PipelineInfo(
            model=self.model_name, device=self.device, diarizer=self.diarizer_name, multilingual=self._multilingual
        )

    def _load_diarizer(self) -> tuple[Any, str | None, str | None]:
        """The diarizer, its name, and a note for results when it is not the one asked for.

        With HF_TOKEN: the seed's pyannote pipeline (hub or cache). Without it, or when that
        cannot be loaded: the embedded diarizer, built only from weights shipped in packages.
        """
        note = None
        if self._settings.hf_token is not None:
            from whisperx.diarize import DiarizationPipeline

            name = self._settings.diarization_model
            try:
                pipeline = DiarizationPipeline(
                    model_name=name, token=self._settings.hf_token.get_secret_value(), device=self.device
                )
            except Exception as error:  # noqa: BLE001 - the embedded diarizer takes over
                logger.warning(
                    "Diarization model %s could not be loaded (%s); using the embedded diarizer", name, error
                )
                note = (
                    f"{name} could not be loaded (check HF_TOKEN, the model's accepted terms and network access), "
                    "so the embedded diarizer labelled the speakers"
                )
            else:
                return pipeline, name, None
        from app.pipeline.diarizers import EMBEDDED_DIARIZER, EmbeddedDiarizer

        try:
            embedded = EmbeddedDiarizer(self.device, self._settings.model_cache_dir / "diarizer")
        except Exception as error:  # transcription goes on without speaker labels
            logger.exception("The embedded diarizer could not be loaded")
            return None, None, f"speakers not labelled: no diarizer could be loaded ({type(error).__name__})"
        return embedded, EMBEDDED_DIARIZER, note

    def _aligner(self, language: str) -> tuple[Any, dict[str, Any]] | None:
        """The wav2vec2 model for a language, loaded once; None when it cannot be had (offline)."""
        if language in self._aligners:
            return self._aligners[language]
        self._aligners[language] = None  # unless it loads below
        if self._checkpoint_missing_offline(language):
            logger.info("No alignment model for %r in the cache, and offline; words are timed by Whisper", language)
            return None
        import whisperx

        try:
            self._aligners[language] = whisperx.load_align_model(
                language, self.device, model_name=self._settings.align_model,
                model_dir=str(self._settings.model_cache_dir / "align"),
            )  # fmt: skip
        except Exception as error:  # noqa: BLE001 - fall back to Whisper's own word times
            logger.info("No alignment model for %r (%s); words are timed by Whisper", language, error)
        else:
            self._ensure_sentence_splitter(language)
        return self._aligners[language]

    def _checkpoint_missing_offline(self, language: str) -> bool:
        """Whether the language's torchaudio aligner has no checkpoint in the cache while offline.

        whisperx builds a torchaudio aligner's ~95M-parameter model before it fetches the weights,
        so a load that fails offline would still cost a worker a ~350 MB peak. HF_HUB_OFFLINE is
        this service's "no downloads" switch, for torchaudio's checkpoints too.
        """
        import torchaudio  # type: ignore[import-untyped]
        from huggingface_hub.constants import HF_HUB_OFFLINE
        from whisperx.alignment import DEFAULT_ALIGN_MODELS_TORCH

        name = self._settings.align_model or DEFAULT_ALIGN_MODELS_TORCH.get(language)
        # `_path` is the checkpoint's name in torchaudio's bundles; private, so looked up with care.
        checkpoint = getattr(getattr(torchaudio.pipelines, name or "", None), "_path", None)
        if not HF_HUB_OFFLINE or not isinstance(checkpoint, str):
            return False
        return not (self._settings.model_cache_dir / "align" / Path(checkpoint).name).exists()

    def _ensure_sentence_splitter(self, language: str) -> None:
        """whisperx.align splits sentences with NLTK's Punkt model, which it downloads on first use.

        Offline that download fails and alignment would crash, so fall back to an untrained
        Punkt model (it still splits at sentence punctuation; it only misses learned abbreviations).
        """
        import nltk
        from whisperx.alignment import PUNKT_LANGUAGES

        punkt = f"tokenizers/punkt_tab/{PUNKT_LANGUAGES.get(language, 'english')}/"
        nltk_data = self._settings.model_cache_dir / "nltk_data"
        if str(nltk_data) not in nltk.data.path:
            nltk.data.path.append(str(nltk_data))
        try:
            nltk.data.find(punkt)
            return
        except LookupError:
            pass
        if nltk.download("punkt_tab", download_dir=str(nltk_data), quiet=True, raise_on_error=False):
            return
        logger.warning("NLTK's punkt_tab could not be downloaded; aligning with an untrained sentence splitter")
        untrained = nltk_data / punkt
        untrained.mkdir(parents=True, exist_ok=True)
        for name in ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab"):
            (untrained / name).touch()

    def run(self, job: Job, progress: ProgressCallback) -> PipelineOutput:
        self.finish_loading()
        import torch

        try:
            return self._run(job, progress)
        except (torch.cuda.OutOfMemoryError, RuntimeError) as error:
            # torch raises OutOfMemoryError; CTranslate2 a RuntimeError saying "out of memory".
            if "out of memory" not in str(error).lower():
                raise
            raise PipelineError(
                f"The GPU ran out of memory. Lower BATCH_SIZE (now {self.batch_size}), set "
                f"COMPUTE_TYPE=int8 (now {self.compute_type}) or lower MAX_CONCURRENT_TASKS."
            ) from None

    def _run(self, job: Job, progress: ProgressCallback) -> PipelineOutput:
        progress(Stage.DECODE, 0.0)
        try:
            audio = decode(job.audio_path, self._settings.ffmpeg_timeout_seconds, self._settings.max_audio_seconds)
        except MediaError as error:
            raise PipelineError(str(error)) from None
        progress(Stage.DECODE, 1.0)

        language = self._language(job, audio)
        # Translation writes English, so English is what gets timed and split into sentences.
        text_language = "en" if job.task == "translate" else language
        progress(Stage.TRANSCRIBE, 0.0)
        aligner = self._aligner(text_language)
        # Without an alignment model Whisper times the words itself, in the same pass.
        segments = self._transcribe(audio, language, job, progress, word_timestamps=aligner is None)
        word_timing = WORD_TIMING_WHISPER
        if aligner is not None:
            segments = self._align(audio, segments, aligner, job, progress)
            word_timing = WORD_TIMING_ALIGNMENT
        progress(Stage.ALIGN, 1.0)

        result: dict[str, Any] = {
            "language": language,
            "task": job.task,
            "model": self.model_name,
            "word_timing": word_timing,
            "options": job.chosen_options(),
        }
        notes = []
        if job.return_char_alignments and aligner is None:
            notes.append(
                "characters are not timed: no wav2vec2 alignment model is available, so Whisper timed the words"
            )
        if job.enable_diarization:
            segments, speakers, note = self._diarize(audio, segments, job, progress)
            result.update(diarizer=self.diarizer_name if speakers is not None else None, speakers=speakers)
            notes += [note] if note else []
        pieces = split_segments(_keep_unaligned_words(segments), text_language)
        result["segments"] = [_segment(piece, with_chars=job.return_char_alignments) for piece in pieces]
        return PipelineOutput(result=result, note="; ".join(notes) or None)

    def _language(self, job: Job, audio: Any) -> str:
        if not self._multilingual:
            if job.language not in (None, "en"):
                raise PipelineError(
                    f"The model {self.model_name} transcribes English only; "
                    f"leave language empty or set WHISPER_MODEL to a multilingual model."
                )
            if job.task == "translate":
                raise PipelineError(
                    f"The model {self.model_name} is English-only and cannot translate; use task=transcribe, "
                    "or set WHISPER_MODEL to a multilingual model."
                )
            return "en"
        return job.language or self._model.detect_language(audio)[0]

    def _transcribe(
        self, audio: Any, language: str, job: Job, progress: ProgressCallback, word_timestamps: bool
    ) -> list[dict[str, Any]]:
        options: dict[str, Any] = {}
        if job.temperature is not None:
            options["temperature"] = job.temperature
        if job.suppress_numerals:
            options["suppress_tokens"] = [-1, *self._numeral_symbol_tokens()]
        vad = {"threshold": job.vad_onset} if job.vad_onset is not None else {}
        if job.vad_offset is not None:
            vad["neg_threshold"] = job.vad_offset
        segments = []
        for start, end in slice_bounds(audio):
            offset = start / SAMPLE_RATE
            pieces, _ = self._batched.transcribe(
                audio[start:end], language=language, task=job.task, batch_size=self.batch_size,
                word_timestamps=word_timestamps, vad_filter=True, vad_parameters=vad or None,
                chunk_length=job.chunk_size, initial_prompt=job.initial_prompt, hotwords=job.hotwords,
                beam_size=job.beam_size or self.beam_size, **options,
            )  # fmt: skip
            for piece in pieces:  # a generator: each segment arrives as its batch is decoded
                segments.append(_whisper_segment(piece, offset, word_timestamps))
                progress(Stage.TRANSCRIBE, min(1.0, (offset + piece.end) * SAMPLE_RATE / len(audio)))
        progress(Stage.TRANSCRIBE, 1.0)
        return segments

    def _align(
        self, audio: Any, segments: list[dict[str, Any]], aligner: tuple[Any, dict[str, Any]], job: Job,
        progress: ProgressCallback,
    ) -> list[dict[str, Any]]:  # fmt: skip
        import whisperx

        progress(Stage.ALIGN, 0.0)
        model, metadata = aligner
        aligned = whisperx.align(
            segments, model, metadata, audio, self.device,
            return_char_alignments=job.return_char_alignments,
            progress_callback=lambda percent: progress(Stage.ALIGN, percent / 100),
        )  # fmt: skip
        return list(aligned["segments"])

    def _numeral_symbol_tokens(self) -> list[int]:
        """Tokens holding a digit or %, $, £: whisperx's list for suppress_numerals, built once."""
        if self._numeral_tokens is None:
            from faster_whisper.tokenizer import Tokenizer
            from whisperx.asr import find_numeral_symbol_tokens

            tokenizer = Tokenizer(self._model.hf_tokenizer, self._multilingual, task="transcribe", language="en")
            self._numeral_tokens = list(find_numeral_symbol_tokens(tokenizer))
        return self._numeral_tokens

    def _diarize(
        self, audio: Any, segments: list[dict[str, Any]], job: Job, progress: ProgressCallback
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None, str | None]:
        """Segments with speakers, each speaker's total speaking time, and a note for the message."""
        if self._diarizer is None:
            return segments, None, self._diarizer_note
        import whisperx

        progress(Stage.DIARIZE, 0.0)
        turns = self._diarizer(
            audio,
            min_speakers=job.min_speakers,
            max_speakers=job.max_speakers,
            progress_callback=lambda percent: progress(Stage.DIARIZE, percent / 100),
        )
        progress(Stage.ASSIGN, 0.0)
        labelled = list(whisperx.assign_word_speakers(turns, {"segments": segments}, fill_nearest=True)["segments"])
        for segment in labelled:
            for word in segment.get("words", []):
                # Words alignment could not time get no speaker from the turns: take their segment's.
                word.setdefault("speaker", segment.get("speaker"))
        progress(Stage.ASSIGN, 1.0)
        seconds = (turns["end"] - turns["start"]).groupby(turns["speaker"]).sum()
        speakers = [{"speaker": str(label), "seconds": round(float(total), 2)} for label, total in seconds.items()]
        return labelled, speakers, self._diarizer_note

    def release(self) -> None:
        """Give back what the last job used: CUDA's cached blocks, and free heap pages to the system."""
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()
        _trim_heap()


def _trim_heap() -> None:
    # glibc keeps freed memory in its arenas; a long task's buffers would stay resident in an idle
    # worker. malloc_trim hands it back (glibc only; elsewhere there is nothing to call).
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _whisper_segment(piece: Any, offset: float, word_timestamps: bool) -> dict[str, Any]:
    """A faster-whisper segment of a slice as a whisperx segment, its times counted from the file's start."""
    segment: dict[str, Any] = {"start": offset + piece.start, "end": offset + piece.end, "text": piece.text}
    if word_timestamps:
        segment["words"] = [
            # `spaced` keeps Whisper's own spacing, so "12%" and "9:30" read as spoken, though Whisper
            # may give "12" and "%" as two words.
            {"word": word.word.strip(), "spaced": word.word, "start": offset + word.start,
             "end": offset + word.end, "score": word.probability}
            for word in piece.words or []
        ]  # fmt: skip
    return segment


def _seconds(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


def _keep_unaligned_words(segments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Segments alignment could not time at all come back from whisperx without words: give them
    their words back, untimed, so the text and the words always agree."""
    return [
        {**segment, "words": [{"word": word} for word in segment["text"].split()]}
        if not segment.get("words") and segment.get("text", "").strip()
        else segment
        for segment in segments
    ]


def _score(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


def _segment(segment: dict[str, Any], with_chars: bool) -> dict[str, Any]:
    """One segment in the API's result shape; words that could not be timed keep null times and `timed: false`."""
    shaped = {
        "start": _seconds(segment["start"]),
        "end": _seconds(segment["end"]),
        "text": segment["text"].strip(),
        "speaker": segment.get("speaker"),
        "words": [
            {
                "word": word["word"],
                "start": _seconds(word.get("start")),
                "end": _seconds(word.get("end")),
                "score": _score(word.get("score")),
                "timed": word.get("start") is not None and word.get("end") is not None,
                "speaker": word.get("speaker"),
            }
            for word in segment.get("words", [])
        ],
    }
    if with_chars and segment.get("chars") is not None:
        shaped["chars"] = [
            {
                "char": char["char"],
                "start": _seconds(char.get("start")),
                "end": _seconds(char.get("end")),
                "score": _score(char.get("score")),
            }
            for char in segment["chars"]
        ]
    return shaped
