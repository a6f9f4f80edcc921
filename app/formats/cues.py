"""Subtitle cues people can read, cut from a transcript's timed words.

The rules are the common broadcast guidelines (BBC, Netflix, EBU):

- a cue holds at most `max_line_count` lines of at most `max_line_width` characters, the
  speaker label included; lines are balanced rather than filled greedily;
- a cue never spans a speaker change or a sentence end, so no cue opens with the tail of the
  sentence before it; a sentence too long for one cue is cut so its last cue is not one or two
  stray words;
- a cue stays up into the pause after its speech, long enough to read (at least MIN_SECONDS,
  about TARGET_CPS characters per second), without touching the next cue; a sentence too short
  to be read in the time before the next one joins its neighbour by the same speaker.

whisperx's writers cut greedily by width only, end cues on the last word and ignore the label's
width, which is what this module exists to fix. Pure functions of the result: no models here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

MIN_SECONDS = 1.0
"""Shortest time a cue is shown, when the pause after it allows."""
TARGET_CPS = 17.0
"""Reading speed the display time is stretched to, characters per second (adults read 15–20)."""
LINGER_SECONDS = 0.6
"""How long a cue stays up after its last word, when the pause allows."""
GAP_SECONDS = 0.08
"""Kept clear between one cue's end and the next one's start (two frames), so cues never touch."""
LONG_PAUSE_SECONDS = 2.0
"""A pause this long inside a sentence starts a new cue."""
MIN_TAIL_WORDS = 3
"""A sentence's last cue holds at least this many words, when the cue before can spare them."""

_SENTENCE_END = re.compile(r"[.!?…。！？][\"'”’)\]]*$")
LANGUAGES_WITHOUT_SPACES = frozenset({"ja", "zh"})  # as whisperx.utils writes them


@dataclass(frozen=True)
class TimedWord:
    text: str
    start: float
    end: float


@dataclass
class Cue:
    start: float
    end: float
    speaker: str | None
    words: list[TimedWord] = field(default_factory=list)
    lines: list[list[str]] = field(default_factory=list)
    """The words of each line as shown, without the speaker label."""


@dataclass(frozen=True)
class Layout:
    """How many characters a line holds and how many lines a cue has."""

    max_line_width: int = 42
    max_line_count: int = 2
    joiner: str = " "

    def label(self, speaker: str | None) -> str:
        return f"[{speaker}]: " if speaker else ""

    def lines(self, words: list[str], first_indent: int) -> list[list[str]]:
        """The words as lines, the first one after `first_indent` characters of label; two lines are
        balanced. A word longer than a line stands on a line of its own."""
        greedy = self._greedy(words, first_indent)
        if len(greedy) == 2:  # the most even cut that fits: nicer to read than a full top line
            cuts = [
                index
                for index in range(1, len(words))
                if self._width(words[:index]) + first_indent <= self.max_line_width
                and self._width(words[index:]) <= self.max_line_width
            ]
            if cuts:
                best = min(cuts, key=lambda i: max(first_indent + self._width(words[:i]), self._width(words[i:])))
                return [words[:best], words[best:]]
        return greedy

    def _width(self, words: list[str]) -> int:
        return len(self.joiner.join(words))

    def _greedy(self, words: list[str], first_indent: int) -> list[list[str]]:
        lines: list[list[str]] = []
        current: list[str] = []
        room = self.max_line_width - first_indent
        for word in words:
            if current and self._width([*current, word]) > room:
                lines.append(current)
                current, room = [], self.max_line_width
            current.append(word)
        if current:
            lines.append(current)
        return lines

    def fits(self, words: list[TimedWord], speaker: str | None) -> bool:
        return len(self._greedy([word.text for word in words], len(self.label(speaker)))) <= self.max_line_count


def _timed_words(segment: dict[str, Any]) -> list[tuple[TimedWord, str | None]]:
    """The segment's words with times, each with its speaker. An untimed word takes the time
    between its timed neighbours; a segment without a word list shares its time among its words."""
    speaker = segment.get("speaker")
    raw = segment.get("words") or _spread(segment)
    words: list[tuple[TimedWord, str | None]] = []
    previous_end = float(segment["start"])
    for index, word in enumerate(raw):
        text = word["word"].strip()
        if not text:
            continue
        start, end = word.get("start"), word.get("end")
        if start is None or end is None:
            following = [w["start"] for w in raw[index + 1 :] if w.get("start") is not None]
            start, end = previous_end, following[0] if following else float(segment["end"])
        start, end = float(start), max(float(end), float(start))
        previous_end = end
        words.append((TimedWord(text, start, end), word.get("speaker") or speaker))
    return words


def _spread(segment: dict[str, Any]) -> list[dict[str, Any]]:
    texts = segment["text"].split()
    start, step = float(segment["start"]), (float(segment["end"]) - float(segment["start"])) / max(len(texts), 1)
    return [{"word": text, "start": start + i * step, "end": start + (i + 1) * step} for i, text in enumerate(texts)]


def _sentences(segments: list[dict[str, Any]]) -> list[tuple[str | None, list[TimedWord]]]:
    """Runs of words by one speaker that end at a sentence end, a segment end or a speaker change."""
    runs: list[tuple[str | None, list[TimedWord]]] = []
    for segment in segments:
        current: list[TimedWord] = []
        speaker: str | None = None
        for word, word_speaker in _timed_words(segment):
            if current and word_speaker != speaker:
                runs.append((speaker, current))
                current = []
            speaker = word_speaker
            current.append(word)
            if _SENTENCE_END.search(word.text):
                runs.append((speaker, current))
                current = []
        if current:
            runs.append((speaker, current))
    return runs


def _cut_sentence(words: list[TimedWord], speaker: str | None, layout: Layout) -> list[list[TimedWord]]:
    pieces: list[list[TimedWord]] = []
    current: list[TimedWord] = []
    for word in words:
        long_pause = bool(current) and word.start - current[-1].end >= LONG_PAUSE_SECONDS
        if current and (long_pause or not layout.fits([*current, word], speaker)):
            pieces.append(current)
            current = []
        current.append(word)
    pieces.append(current)
    # No stray tail: move words down from the cue before while it keeps enough and the tail fits.
    if len(pieces) > 1:
        before, tail = pieces[-2], pieces[-1]
        while len(tail) < MIN_TAIL_WORDS and len(before) > MIN_TAIL_WORDS:
            moved = [before[-1], *tail]
            if not layout.fits(moved, speaker) or tail[0].start - before[-1].end >= LONG_PAUSE_SECONDS:
                break
            before, tail = before[:-1], moved
        pieces[-2:] = [before, tail]
    return pieces


def _joinable(first: Cue, second: Cue, layout: Layout) -> bool:
    return first.speaker == second.speaker and layout.fits([*first.words, *second.words], first.speaker)


def _join(first: Cue, second: Cue) -> Cue:
    return Cue(first.start, max(first.end, second.end), first.speaker, [*first.words, *second.words])


def _join_short(cues: list[Cue], layout: Layout) -> list[Cue]:
    """A cue that cannot stay up MIN_SECONDS before the next one starts joins the next cue, or
    else the one before, when they are by the same speaker and fit together."""
    forward: list[Cue] = []
    for cue in cues:
        if forward and cue.start - forward[-1].start < MIN_SECONDS and _joinable(forward[-1], cue, layout):
            forward[-1] = _join(forward[-1], cue)
        else:
            forward.append(cue)
    backward: list[Cue] = []
    for index, cue in enumerate(forward):
        short = index + 1 < len(forward) and forward[index + 1].start - cue.start < MIN_SECONDS
        if short and backward and _joinable(backward[-1], cue, layout):
            backward[-1] = _join(backward[-1], cue)
        else:
            backward.append(cue)
    return backward


def _display_end(cue: Cue, next_start: float | None, layout: Layout) -> float:
    """Long enough to read, up to GAP_SECONDS before the next cue (even if the speech ran on)."""
    characters = len(layout.joiner.join(word.text for word in cue.words))
    wanted = max(cue.end + LINGER_SECONDS, cue.start + MIN_SECONDS, cue.start + characters / TARGET_CPS)
    if next_start is None:
        return wanted
    if next_start - GAP_SECONDS > cue.start:
        return min(wanted, next_start - GAP_SECONDS)
    return min(wanted, next_start)  # the next cue starts at once: no room for a gap


def build_cues(result: dict[str, Any], layout: Layout) -> list[Cue]:
    """The result's words cut into readable cues, in time order, none overlapping the next."""
    cues = [
        Cue(piece[0].start, max(word.end for word in piece), speaker, piece)
        for speaker, words in _sentences(result["segments"])
        for piece in _cut_sentence(words, speaker, layout)
    ]
    cues.sort(key=lambda cue: cue.start)
    cues = _join_short(cues, layout)
    for index, cue in enumerate(cues):
        next_start = cues[index + 1].start if index + 1 < len(cues) else None
        cue.end = _display_end(cue, next_start, layout)
        cue.lines = layout.lines([word.text for word in cue.words], len(layout.label(cue.speaker)))
    return cues
