"""Which language each stretch of a recording is spoken in, for audio that changes language.

Whisper decides a language once per 30-s window, so a window that starts in English decodes the
German after it as English words (an invented translation). faster-whisper's own per-window
detection (`multilingual=True`) kept English over the German half of an English-then-German
espeak clip. Detecting per utterance was no better: on such a clip, single ~3-s German sentences came
out as English (0.6), Japanese or Latin, with German at 0.05-0.2. Stretches of ~8 s of speech were
right every time (German 0.35-0.98), so:

1. the VAD's utterances are grouped into stretches of up to `STRETCH_SECONDS`, and the language of
   each stretch is detected (one encoder pass each, batched);
2. only languages holding a fair share of the speech (summed over stretches, weighted by length)
   are candidates, and each stretch takes the candidate it finds likeliest;
3. a run of stretches in one language stands on its own only when it is long enough and its
   language leads the neighbouring run's by a margin; a weaker run joins a neighbour;
4. where the language changes, the last stretch before the change may already hold some of the next
   language: each of its later utterances is checked with the speech that follows it (again ~8 s), and
   the change moves to the first one found in the next language.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np

from app.media import SAMPLE_RATE
from app.pipeline.slicing import slice_bounds

STRETCH_SECONDS = 8.0
"""Longest stretch of speech whose language is detected at once: long enough to be told apart
(measured above), short enough that a change of language is placed within a sentence or two."""
CANDIDATE_SHARE = 0.1
"""Fewest of the speech's seconds (as summed probability) a language needs to be considered at all."""
MIN_RUN_SECONDS = 4.0
"""Shortest stretch of speech kept in a language of its own; shorter ones are too unsure to act on."""
MARGIN = 0.05
"""How far, on average, a run's language must lead its neighbour's over the run's stretches."""

Span = tuple[int, int]
"""Start and end sample of a stretch of audio."""


@dataclass(frozen=True)
class Stretch:
    """Consecutive utterances (sample spans) and the probability of each language over them."""

    utterances: tuple[Span, ...]
    probabilities: dict[str, float]

    @property
    def start(self) -> int:
        return self.utterances[0][0]

    @property
    def end(self) -> int:
        return self.utterances[-1][1]

    @property
    def seconds(self) -> float:
        return sum(end - start for start, end in self.utterances) / SAMPLE_RATE


@dataclass
class Run:
    """Consecutive stretches in one language."""

    language: str
    stretches: list[Stretch] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(stretch.seconds for stretch in self.stretches)

    def mean(self, language: str) -> float:
        """The language's probability over the run, weighted by each stretch's length."""
        weighted = sum(s.probabilities.get(language, 0.0) * s.seconds for s in self.stretches)
        return weighted / max(self.seconds, 1e-9)


def speech_utterances(audio: np.ndarray, vad: dict[str, float]) -> list[Span]:
    """The VAD's utterances in `audio`, at most 30 s each (Whisper's window); the VAD runs slice by
    slice, as transcription does, so its memory stays bounded on long files."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(min_silence_duration_ms=160, max_speech_duration_s=30, **vad)
    return [
        (start + stamp["start"], start + stamp["end"])
        for start, end in slice_bounds(audio)
        for stamp in get_speech_timestamps(audio[start:end], options)
    ]


def group(utterances: Sequence[Span]) -> list[tuple[Span, ...]]:
    """Consecutive utterances grouped into stretches of up to `STRETCH_SECONDS` from first start to last end."""
    groups: list[list[Span]] = []
    for utterance in utterances:
        if groups and (utterance[1] - groups[-1][0][0]) / SAMPLE_RATE <= STRETCH_SECONDS:
            groups[-1].append(utterance)
        else:
            groups.append([utterance])
    return [tuple(spans) for spans in groups]


def detect(model: Any, audio: np.ndarray, spans: Sequence[Span], batch_size: int) -> list[dict[str, float]]:
    """Whisper's language probabilities for each span of `audio` (a faster-whisper `WhisperModel`)."""
    from faster_whisper.audio import pad_or_trim

    found = []
    for first in range(0, len(spans), batch_size):
        batch = spans[first : first + batch_size]
        features = np.stack([pad_or_trim(model.feature_extractor(audio[s:e])[..., :-1]) for s, e in batch])
        # One encoder pass per batch; the decoder then reads the language tokens' probabilities.
        for result in model.model.detect_language(model.encode(features)):
            found.append({token[2:-2]: probability for token, probability in result})
    return found


def detect_runs(model: Any, audio: np.ndarray, vad: dict[str, float], batch_size: int) -> list[Run]:
    """The recording's speech as runs of one language each (steps 1 to 4 above)."""
    utterances = speech_utterances(audio, vad)
    groups = group(utterances)
    probabilities = detect(model, audio, [(spans[0][0], spans[-1][1]) for spans in groups], batch_size)
    runs = language_runs([Stretch(spans, found) for spans, found in zip(groups, probabilities, strict=True)])
    for before, after in pairwise(runs):
        _move_change(model, audio, utterances, before, after, batch_size)
    return runs


def _move_change(model: Any, audio: np.ndarray, utterances: list[Span], before: Run, after: Run, batch: int) -> None:
    """Step 4: hand the utterances at the end of `before` that are in `after`'s language over to it."""
    last = before.stretches[-1]
    if len(last.utterances) < 2:
        return
    following = [u for u in utterances if u[0] >= last.utterances[1][0]]
    windows = [
        (spans[0][0], spans[-1][1]) for spans in (group(following[i:])[0] for i in range(len(last.utterances) - 1))
    ]
    for index, found in enumerate(detect(model, audio, windows, batch), start=1):
        if found.get(after.language, 0.0) > found.get(before.language, 0.0):
            before.stretches[-1] = Stretch(last.utterances[:index], last.probabilities)
            after.stretches.insert(0, Stretch(last.utterances[index:], found))
            return


def language_runs(stretches: list[Stretch]) -> list[Run]:
    """The stretches grouped into runs of one language each (steps 2 and 3 above)."""
    if not stretches:
        return []
    total = sum(stretch.seconds for stretch in stretches)
    mass: defaultdict[str, float] = defaultdict(float)
    for stretch in stretches:
        for language, probability in stretch.probabilities.items():
            mass[language] += probability * stretch.seconds
    candidates = [language for language, weight in mass.items() if weight >= CANDIDATE_SHARE * total]
    candidates = candidates or [max(mass, key=mass.__getitem__)]
    runs: list[Run] = []
    for stretch in stretches:
        language = max(candidates, key=lambda candidate: stretch.probabilities.get(candidate, 0.0))
        if not runs or runs[-1].language != language:
            runs.append(Run(language))
        runs[-1].stretches.append(stretch)
    while len(runs) > 1:
        weak = [index for index, run in enumerate(runs) if _is_weak(runs, index)]
        if not weak:
            break
        index = min(weak, key=lambda i: runs[i].seconds)
        neighbours = [runs[i] for i in (index - 1, index + 1) if 0 <= i < len(runs)]
        into = max(neighbours, key=lambda neighbour: runs[index].mean(neighbour.language))
        runs[index].language = into.language
        runs = _joined(runs)
    return runs


def _is_weak(runs: list[Run], index: int) -> bool:
    run = runs[index]
    if run.seconds < MIN_RUN_SECONDS:
        return True
    rivals = [runs[i].language for i in (index - 1, index + 1) if 0 <= i < len(runs)]
    return any(run.mean(run.language) - run.mean(rival) < MARGIN for rival in rivals)


def _joined(runs: list[Run]) -> list[Run]:
    joined: list[Run] = []
    for run in runs:
        if joined and joined[-1].language == run.language:
            joined[-1].stretches += run.stretches
        else:
            joined.append(run)
    return joined


def run_spans(runs: list[Run], length: int) -> list[tuple[str, int, int]]:
    """(language, start, end) sample spans covering the whole recording, cut midway between runs."""
    cuts = [0]
    for before, after in pairwise(runs):
        cuts.append((before.stretches[-1].end + after.stretches[0].start) // 2)
    cuts.append(length)
    return [(run.language, start, end) for run, start, end in zip(runs, cuts, cuts[1:], strict=False)]


def most_spoken(runs: list[Run]) -> str:
    """The language with the most seconds of speech."""
    seconds: defaultdict[str, float] = defaultdict(float)
    for run in runs:
        seconds[run.language] += run.seconds
    return max(seconds, key=seconds.__getitem__)


SLICE_SECONDS = 8.0
"""Length of the stretches of each transcribed window whose language is read: a 30-s window that
holds two languages reads as the first (an English-then-German espeak clip of 25 s: English 0.65),
its 8-s stretches as what they are (English 0.95, then Latin 0.29 and German for the German)."""


@dataclass(frozen=True)
class Window:
    """A stretch of speech in a window the transcription encoded, and Whisper's language
    probabilities for it, read from that encoding (app/pipeline/batched.py)."""

    start: float
    """About where in the file the stretch starts, in seconds."""
    seconds: float
    """Seconds of speech in the stretch (SLICE_SECONDS, or less in a shorter window)."""
    probabilities: dict[str, float]


def slice_spans(seconds: float) -> list[tuple[float, float]]:
    """(start, seconds of speech) of the stretches read in a window of `seconds` of speech:
    SLICE_SECONDS each, the last one ending with the speech (overlapping the one before it); a
    window shorter than that is one stretch (its encoding runs on into the padding)."""
    if seconds <= SLICE_SECONDS:
        return [(0.0, seconds)]
    count = math.ceil(seconds / SLICE_SECONDS)
    return [(index * SLICE_SECONDS, SLICE_SECONDS) for index in range(count - 1)] + [
        (seconds - SLICE_SECONDS, SLICE_SECONDS)
    ]


def likeliest(windows: Sequence[Window]) -> tuple[str, float]:
    """The likeliest language over `windows` (probabilities weighted by each window's speech) and its probability."""
    total = sum(window.seconds for window in windows)
    mass: defaultdict[str, float] = defaultdict(float)
    for window in windows:
        for language, probability in window.probabilities.items():
            mass[language] += probability * window.seconds / total
    language = max(mass, key=mass.__getitem__)
    return language, mass[language]


OWN_CHANCE = 0.15
"""A stretch of SLICE_SECONDS of speech counts against the file's language when Whisper gives that
language at most this probability there and another language more. Measured with
bench/language_check.py (`base`) on single-language English: espeak dialogues 0.77 or more, the
pyannote sample 0.93, real recordings mostly over 0.6 but a real meeting's noisy stretches 0.35
(Welsh 0.62 above it) and 0.19 (no other language above 0.08); the German stretches of the English-
then-German clips 0.04 (Latvian, Latin or German above it). espeak German at the start of a clip,
before English, read as English 0.31-0.36 and is not flagged: no threshold tells it from the meeting."""


def _against(language: str, window: Window) -> bool:
    own = window.probabilities.get(language, 0.0)
    others = [chance for found, chance in window.probabilities.items() if found != language]
    return window.seconds >= SLICE_SECONDS and own <= OWN_CHANCE and max(others, default=0.0) > own


def second_language_warning(language: str, windows: Sequence[Window]) -> str | None:
    """A warning for the result when a full stretch of the transcription's speech is unlikely to be
    in the file's `language` (detected on the first windows) and likelier in another, else None."""
    against = [window for window in windows if _against(language, window)]
    if not against:
        return None
    first = min(against, key=lambda window: window.start)
    chance, other = max((chance, found) for found, chance in first.probabilities.items() if found != language)
    own = first.probabilities.get(language, 0.0)
    return (
        f"The audio may contain more than one language: {language} was detected, but the speech from about "
        f"{first.start:.0f} s is unlikely to be {language} ({language} {own:.2f}, likeliest {other} {chance:.2f}). "
        f"All of it was transcribed as {language}, so words in another language may be missing or translated; "
        "send multilingual=true to transcribe each part in its own language"
    )
