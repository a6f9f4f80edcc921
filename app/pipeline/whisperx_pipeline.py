"""The real pipeline: WhisperX transcription, word timing, speaker diarization and assignment.

Runs inside a worker process, the only place torch and whisperx's models are loaded. The API process
imports only `whisperx.utils` (language tables, subtitle writers), which needs no torch.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.config import Settings
from app.media import SAMPLE_RATE, MediaError, decode
from app.models.hub import ModelUnavailable, fetch_aligner, fetch_punkt, hub_offline, untrained_punkt_dir
from app.models.misses import Misses
from app.ops.telemetry import disable_onnxruntime_telemetry, disable_telemetry
from app.pipeline.base import NO_SPEECH, Job, PipelineError, PipelineInfo, PipelineOutput, ProgressCallback, Stage
from app.pipeline.languages import Window, detect_runs, most_spoken, run_spans, second_language_warning
from app.pipeline.model_manager import ModelManager
from app.pipeline.models import cuda_available, default_whisper_model, resolve_whisper_model
from app.pipeline.segments import split_segments
from app.pipeline.slicing import slice_bounds
from app.voices.matching import EMBEDDED_ENCODER, identify_speakers

logger = logging.getLogger(__name__)

WORD_TIMING_ALIGNMENT = "wav2vec2-alignment"
WORD_TIMING_WHISPER = "whisper-word-timestamps"
WORD_TIMING_MIXED = "mixed"
"""With `multilingual`: some languages' words were aligned by wav2vec2, others timed by Whisper."""


@dataclass
class LoadedWhisper:
    """One loaded Whisper model and what is derived from it."""

    name: str
    model: Any  # faster_whisper.WhisperModel
    batched: Any  # faster_whisper.BatchedInferencePipeline over it
    multilingual: bool
    numeral_tokens: list[int] | None = field(default=None)


class WhisperXPipeline:
    """Loads the models once, then transcribes job after job with them."""

    def __init__(self, settings: Settings) -> None:
        """Load the default Whisper model; `finish_loading` loads the rest (torch and the diarizer)."""
        disable_telemetry()
        disable_onnxruntime_telemetry()
        self._settings = settings
        cuda = cuda_available(settings)
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

        self.model_name = default_whisper_model(settings, cuda)
        self.loads: list[str] = []
        """Every model this worker has loaded, in order: what its reports show (a reload counts again)."""
        self._whisper = ModelManager(
            self._load_whisper, settings.max_loaded_models, settings.model_idle_seconds, keep=self.model_name,
            fetch=lambda name: resolve_whisper_model(name, settings),
        )  # fmt: skip
        with self._whisper.use(self.model_name) as default:
            self._multilingual = default.multilingual
        self._aligners: dict[str, tuple[Any, dict[str, Any]] | None] = {}
        self._aligner_notes: dict[str, str] = {}
        self._aligner_errors: dict[str, str] = {}  # for /health: align:LANG -> why it could not be had
        self._misses = Misses(settings.model_cache_dir / "unavailable")
        self._loaded = False
        self._diarizer: Any = None
        self.diarizer_name: str | None = None
        self._diarizer_note: str | None = None

    def _load_whisper(self, name: str) -> LoadedWhisper:
        import faster_whisper

        self.loads.append(f"whisper:{name}")
        # faster-whisper's own model and batched pipeline, with its packaged ONNX silero VAD:
        # whisperx.load_model would also load a pyannote VAD (torch) that runs ~15x slower here.
        model = faster_whisper.WhisperModel(
            resolve_whisper_model(name, self._settings),
            self.device,
            compute_type=self.compute_type,
            cpu_threads=self._threads,
        )
        return LoadedWhisper(
            name, model, faster_whisper.BatchedInferencePipeline(model), bool(model.model.is_multilingual)
        )

    def unload_idle(self) -> bool:
        if not self._whisper.unload_idle():
            return False
        _trim_heap()  # the weights' pages go back to the system now, not at the next task
        return True

    def finish_loading(self) -> None:
        """Load everything else a task needs, once, before the worker says it is ready: torch, the
        diarizer, faster-whisper's VAD, whisperX's alignment code and the English aligner (the
        language most tasks speak), so that the first task starts as fast as the tenth."""
        if self._loaded:
            return
        import torch
        import whisperx  # noqa: F401 - alignment and speaker assignment: seconds of imports (transformers, pandas)
        from faster_whisper.vad import get_vad_model

        torch.set_num_threads(self._threads)
        self._diarizer, self.diarizer_name, self._diarizer_note = self._load_diarizer()
        if self._diarizer is not None:
            self.loads.append(f"diarizer:{self.diarizer_name}")
        get_vad_model()  # cached by faster-whisper: its ONNX session is built once a process
        self.loads.append("vad:silero")
        self._aligner("en")
        self._loaded = True

    def info(self) -> PipelineInfo:
        return PipelineInfo(
            model=self.model_name, device=self.device, diarizer=self.diarizer_name, multilingual=self._multilingual,
            loaded_models=tuple(self._whisper.loaded()),
            model_errors=tuple(
                # Only this service's own messages: others may quote server paths (the log has them).
                (name, str(error) if isinstance(error, ModelUnavailable) else f"{type(error).__name__}; see the log")
                for name, error in self._whisper.failures.items()
            ) + tuple(self._aligner_errors.items()),
            loads=tuple(self.loads),
        )  # fmt: skip

    def _load_diarizer(self) -> tuple[Any, str | None, str | None]:
        """The diarizer, its name, and a note for results when it is not the one asked for.

        With HF_TOKEN: the seed's pyannote pipeline (hub or cache). Without it, or when that
        cannot be loaded: the embedded diarizer, built only from weights shipped in packages.
        """
        note = None
        if self._settings.hf_token is not None:
            from whisperx.diarize import DiarizationPipeline

            from app.models.hub import cache_subdir, fetch_diarization

            name = self._settings.diarization_model
            try:
                fetch_diarization(self._settings)  # cache first; fails fast when the hub cannot be had
                with hub_offline():  # every file is cached now: pyannote need not ask the hub again
                    pipeline = DiarizationPipeline(
                        model_name=name, token=self._settings.hf_token.get_secret_value(), device=self.device,
                        cache_dir=str(cache_subdir(self._settings, "diarization")),
                    )  # fmt: skip
            except Exception as error:  # noqa: BLE001 - the embedded diarizer takes over
                logger.warning(
                    "Diarization model %s could not be loaded (%s); using the embedded diarizer", name, error
                )
                reason = str(error) if isinstance(error, ModelUnavailable) else type(error).__name__
                note = (
                    f"{name} could not be loaded ({reason}; check HF_TOKEN and the model's accepted terms), "
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
        """The wav2vec2 model for a language, loaded once; None when it cannot be had (a note says why).

        One that cannot be fetched is asked for again only after `misses.RETRY_SECONDS`, and its
        details go to the log (once) and /health, not to each task: the task's note is one line.
        """
        if language in self._aligners:
            return self._aligners[language]
        name = f"align:{language}"
        try:
            # Cache first; a miss is fetched before whisperx builds the model, so a load that cannot
            # succeed never costs a torchaudio aligner's ~350 MB peak.
            aligner = self._misses.fetch(name, lambda: fetch_aligner(language, self._settings))
        except ModelUnavailable as error:
            self._aligner_errors[name] = str(error)
            self._aligner_notes[language] = (
                f"words timed by Whisper; the wav2vec2 alignment model for {language} is not cached"
            )
            return None
        self._aligner_errors.pop(name, None)
        self._aligner_notes.pop(language, None)
        self._aligners[language] = None  # unless it loads below
        if aligner is None:
            # Not offered (ALIGN_LANGUAGES), or whisperX has none for the language: nothing was fetched.
            self._aligner_notes[language] = _not_offered_note(language, self._settings)
            return None
        import whisperx

        try:
            with hub_offline():  # the files are local now
                self._aligners[language] = whisperx.load_align_model(
                    language, self.device, model_name=aligner.model_name, model_dir=aligner.model_dir
                )
        except Exception as error:  # noqa: BLE001 - fall back to Whisper's own word times
            logger.warning("The alignment model for %r did not load (%s); words are timed by Whisper", language, error)
            self._aligner_errors[name] = f"did not load ({type(error).__name__}; see the log)"
            self._aligner_notes[language] = (
                f"words timed by Whisper; the wav2vec2 alignment model for {language} did not load"
            )
        else:
            self.loads.append(name)
            self._ensure_sentence_splitter(language)
        return self._aligners[language]

    def _ensure_sentence_splitter(self, language: str) -> None:
        """whisperx.align splits sentences with NLTK's Punkt model, which it downloads on first use.

        When it is neither cached nor downloadable alignment would crash, so fall back to an untrained
        Punkt model (it still splits at sentence punctuation; it only misses learned abbreviations).
        """
        import nltk
        from whisperx.alignment import PUNKT_LANGUAGES

        if fetch_punkt(language, self._settings):
            return
        logger.warning("NLTK's punkt_tab could not be had; aligning with an untrained sentence splitter")
        untrained = untrained_punkt_dir(self._settings)
        folder = untrained / f"tokenizers/punkt_tab/{PUNKT_LANGUAGES.get(language, 'english')}"
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab"):
            (folder / name).touch()
        if str(untrained) not in nltk.data.path:
            nltk.data.path.append(str(untrained))

    def run(self, job: Job, progress: ProgressCallback) -> PipelineOutput:
        self.finish_loading()
        import torch

        try:
            with self._whisper.use(job.model or self.model_name) as whisper:
                return self._run(job, whisper, progress)
        except ModelUnavailable as error:  # a model this task needs (its Whisper model, an aligner): say how to get it
            raise PipelineError(str(error)) from error
        except (torch.cuda.OutOfMemoryError, RuntimeError) as error:
            # torch raises OutOfMemoryError; CTranslate2 a RuntimeError saying "out of memory".
            if "out of memory" not in str(error).lower():
                raise
            raise PipelineError(
                f"The GPU ran out of memory. Lower BATCH_SIZE (now {self.batch_size}), set "
                f"COMPUTE_TYPE=int8 (now {self.compute_type}) or lower MAX_CONCURRENT_TASKS."
            ) from None

    def _run(self, job: Job, whisper: LoadedWhisper, progress: ProgressCallback) -> PipelineOutput:
        progress(Stage.DECODE, 0.0)
        try:
            audio = decode(job.audio_path, self._settings.ffmpeg_timeout_seconds, self._settings.max_audio_seconds)
        except MediaError as error:
            raise PipelineError(str(error)) from None
        progress(Stage.DECODE, 1.0)

        _require_multilingual_model(job, whisper)
        if job.multilingual:
            parts, language = self._language_parts(audio, whisper, job)
        else:  # None: detected on the first windows the transcription encodes
            language = job.language or (None if whisper.multilingual else "en")
            parts = [(language, 0, len(audio))]
        progress(Stage.TRANSCRIBE, 0.0)

        def text_language(spoken: str) -> str:  # translation writes English: that is what is timed and split
            return "en" if job.task == "translate" else spoken

        def whisper_times_words(spoken: str) -> bool:  # without an alignment model, in the same pass
            return self._aligner(text_language(spoken)) is None

        windows: list[Window] = []
        transcribed = [
            self._transcribe(whisper, audio, (start, end), part, job, progress, whisper_times_words, windows)
            for part, start, end in parts
        ]
        progress(Stage.TRANSCRIBE, 1.0)
        heard = any(segment["text"].strip() for part_segments, _ in transcribed for segment in part_segments)
        if language is None or not job.multilingual:  # with `multilingual`, the most spoken, found before
            language = transcribed[0][1] if heard or job.language else None
        warnings = []
        if heard and language is not None and windows:
            warning = second_language_warning(language, windows)
            warnings += [warning] if warning else []
        spoken = [found for _, found in transcribed if found is not None]
        aligners = {found: self._aligner(text_language(found)) for found in spoken}
        segments: list[dict[str, Any]] = []
        for part_segments, found in transcribed:
            aligner = aligners.get(found) if found else None
            aligned = part_segments if aligner is None else self._align(audio, part_segments, aligner, job, progress)
            segments += [{**segment, "language": found} for segment in aligned]
        progress(Stage.ALIGN, 1.0)
        timings = {WORD_TIMING_WHISPER if aligner is None else WORD_TIMING_ALIGNMENT for aligner in aligners.values()}
        word_timing = next(iter(timings)) if len(timings) == 1 else WORD_TIMING_MIXED if timings else None

        result: dict[str, Any] = {
            "language": language,
            "task": job.task,
            "model": whisper.name,
            "word_timing": word_timing,
            "options": job.chosen_options(),
        }
        if warnings:
            result["warnings"] = warnings
        notes = [] if heard else [NO_SPEECH]
        notes += [self._aligner_notes[text] for text in map(text_language, aligners) if text in self._aligner_notes]
        if job.return_char_alignments and word_timing != WORD_TIMING_ALIGNMENT:
            notes.append(
                "characters are not timed: no wav2vec2 alignment model is available, so Whisper timed the words"
            )
        if job.enable_diarization and not heard:  # no one to tell apart
            result.update(diarizer=self.diarizer_name, speakers=[])
        elif job.enable_diarization:
            segments, speakers, voiceprints, note = self._diarize(audio, segments, job, progress)
            result.update(diarizer=self.diarizer_name if speakers is not None else None, speakers=speakers)
            if voiceprints:
                # Kept with the task (never shown in results), so a speaker can be enrolled from it later.
                result["voiceprints"] = voiceprints
            notes += [note] if note else []
        pieces = [
            {**piece, "language": segment["language"]}
            for segment in _keep_unaligned_words(segments)
            for piece in split_segments([segment], text_language(segment["language"] or "en"))
        ]
        result["segments"] = [
            _segment(piece, with_chars=job.return_char_alignments, with_language=job.multilingual) for piece in pieces
        ]
        result["notes"] = notes
        if job.identify_speakers:
            result = identify_speakers(result, job.known_voices)
        return PipelineOutput(result=result, note="; ".join(notes) or None)

    def _language_parts(
        self, audio: Any, whisper: LoadedWhisper, job: Job
    ) -> tuple[list[tuple[str | None, int, int]], str | None]:
        """(language, start, end) spans covering the audio, and the most-spoken language."""
        runs = detect_runs(whisper.model, audio, _vad_options(job), self.batch_size)
        if not runs:  # no speech found: transcribe as usual, the language detected as it goes
            return [(None, 0, len(audio))], None
        logger.info("Languages: %s", ", ".join(f"{run.language} {run.seconds:.1f} s" for run in runs))
        return list(run_spans(runs, len(audio))), most_spoken(runs)

    def _transcribe(
        self,
        whisper: LoadedWhisper,
        audio: Any,
        span: tuple[int, int],
        language: str | None,
        job: Job,
        progress: ProgressCallback,
        whisper_times_words: Callable[[str], bool],
        windows: list[Window],
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The segments of audio[span[0]:span[1]], timed from the start of `audio`, and their language.

        With `language` None, it is detected on the first windows the transcription encodes (None when
        no speech is found), and each window's language probabilities are added to `windows`."""
        from app.pipeline.batched import DetectingPipeline

        options: dict[str, Any] = {}
        if job.temperature is not None:
            options["temperature"] = job.temperature
        if job.suppress_numerals:
            options["suppress_tokens"] = [-1, *_numeral_symbol_tokens(whisper)]
        vad = _vad_options(job)
        detecting = language is None
        segments = []
        first, last = span
        for start, end in slice_bounds(audio[first:last]):
            offset = (first + start) / SAMPLE_RATE
            batched = (
                DetectingPipeline(whisper.model, offset, whisper_times_words if language is None else None)
                if detecting
                else whisper.batched
            )
            pieces, _ = batched.transcribe(
                # A detecting pipeline replaces the language with the one it finds on the first batch.
                audio[first + start : first + end], language=language or "en", task=job.task,
                batch_size=self.batch_size, word_timestamps=language is not None and whisper_times_words(language),
                vad_filter=True, vad_parameters=vad or None, chunk_length=job.chunk_size,
                initial_prompt=job.initial_prompt, hotwords=job.hotwords, beam_size=job.beam_size or self.beam_size,
                **options,
            )  # fmt: skip
            for piece in pieces:  # a generator: each segment arrives as its batch is decoded
                segments.append(_whisper_segment(piece, offset))
                progress(Stage.TRANSCRIBE, min(1.0, (offset + piece.end) * SAMPLE_RATE / len(audio)), piece.text)
            if isinstance(batched, DetectingPipeline):
                language = language or batched.language
                windows += batched.windows
        return segments, language

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

    def _diarize(
        self, audio: Any, segments: list[dict[str, Any]], job: Job, progress: ProgressCallback
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None, dict[str, Any] | None, str | None]:
        """Segments with speakers, each speaker's total speaking time, their voiceprints, and a note."""
        if self._diarizer is None:
            return segments, None, None, self._diarizer_note
        from app.pipeline.diarizers import EmbeddedDiarizer
        from app.pipeline.voiceprints import speaker_embeddings
        from app.pipeline.word_speakers import assign_speakers

        progress(Stage.DIARIZE, 0.0)
        # The embedded diarizer's speakers are embedded after it returns: about a twentieth of the stage.
        share = 0.95 if isinstance(self._diarizer, EmbeddedDiarizer) else 1.0
        options: dict[str, Any] = {
            "min_speakers": job.min_speakers,
            "max_speakers": job.max_speakers,
            "progress_callback": lambda percent: progress(Stage.DIARIZE, share * percent / 100),
        }
        with warnings.catch_warnings(), np.errstate(invalid="ignore"):
            # On a second or two of speech no window is long enough for an embedding, and pyannote's
            # clustering averages the empty set (numpy warns "Mean of empty slice" and of an invalid
            # divide); it then gives every turn one speaker, which is right: nothing to warn about.
            warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
            if isinstance(self._diarizer, EmbeddedDiarizer):
                turns = self._diarizer(audio, **options)
                # From each speaker's own turns, however the clustering found them.
                embeddings = speaker_embeddings(self._diarizer.encoder, audio, turns)
                progress(Stage.DIARIZE, 1.0)
                voiceprints = {"encoder": EMBEDDED_ENCODER, "speakers": embeddings}
            else:  # pyannote's pipeline: the embeddings of its own model
                turns, embeddings = self._diarizer(audio, return_embeddings=True, **options)
                voiceprints = {"encoder": f"pyannote:{self.diarizer_name}", "speakers": embeddings or {}}
        progress(Stage.ASSIGN, 0.0)
        labelled = assign_speakers(turns, segments)
        progress(Stage.ASSIGN, 1.0)
        seconds = (turns["end"] - turns["start"]).groupby(turns["speaker"]).sum()
        speakers = [{"speaker": str(label), "seconds": round(float(total), 2)} for label, total in seconds.items()]
        return labelled, speakers, voiceprints, self._diarizer_note

    def release(self) -> None:
        """Give back what the last job used: CUDA's cached blocks, and free heap pages to the system."""
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()
        _trim_heap()


def _not_offered_note(language: str, settings: Settings) -> str:
    """The result's note when no aligner is tried for the language."""
    why = "" if settings.aligns(language) else " (ALIGN_LANGUAGES)"
    return f"words timed by Whisper; no alignment model is offered for {language}{why}"


def _require_multilingual_model(job: Job, whisper: LoadedWhisper) -> None:
    if whisper.multilingual:
        return
    if job.language not in (None, "en"):
        raise PipelineError(
            f"The model {whisper.name} transcribes English only; leave language empty or choose a multilingual model."
        )
    if job.task == "translate":
        raise PipelineError(
            f"The model {whisper.name} is English-only and cannot translate; use task=transcribe, "
            "or choose a multilingual model."
        )
    if job.multilingual:
        raise PipelineError(
            f"The model {whisper.name} is English-only and cannot tell languages apart; leave multilingual off, "
            "or choose a multilingual model."
        )


def _vad_options(job: Job) -> dict[str, float]:
    vad = {"threshold": job.vad_onset} if job.vad_onset is not None else {}
    if job.vad_offset is not None:
        vad["neg_threshold"] = job.vad_offset
    return vad


def _trim_heap() -> None:
    # glibc keeps freed memory in its arenas; a long task's buffers would stay resident in an idle
    # worker. malloc_trim hands it back (glibc only; elsewhere there is nothing to call).
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _numeral_symbol_tokens(whisper: LoadedWhisper) -> list[int]:
    """Tokens holding a digit or %, $, £: whisperx's list for suppress_numerals, built once a model."""
    if whisper.numeral_tokens is None:
        from faster_whisper.tokenizer import Tokenizer
        from whisperx.asr import find_numeral_symbol_tokens

        tokenizer = Tokenizer(whisper.model.hf_tokenizer, whisper.multilingual, task="transcribe", language="en")
        whisper.numeral_tokens = list(find_numeral_symbol_tokens(tokenizer))
    return whisper.numeral_tokens


def _whisper_segment(piece: Any, offset: float) -> dict[str, Any]:
    """A faster-whisper segment of a slice as a whisperx segment, its times counted from the file's start."""
    segment: dict[str, Any] = {"start": offset + piece.start, "end": offset + piece.end, "text": piece.text}
    if piece.words is not None:  # Whisper timed the words
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


def _segment(segment: dict[str, Any], with_chars: bool, with_language: bool = False) -> dict[str, Any]:
    """One segment in the API's result shape; words that could not be timed keep null times and `timed: false`."""
    shaped: dict[str, Any] = {
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
    if with_language:
        shaped["language"] = segment["language"]
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


def whisperx_pipeline(settings: Settings) -> WhisperXPipeline:
    """The real pipeline, the default of both backends' workers (a PipelineFactory: importable by name).

    Importing this module loads no torch: a process that never runs a job never does."""
    return WhisperXPipeline(settings)
