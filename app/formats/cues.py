"""Subtitle cues people can read, cut from a transcript's timed words.

The rules are the common broadcast guidelines (BBC, Netflix, EBU):

- a cue holds at most `max_line_count` lines of at most `max_line_width` characters, the
  speaker label included; lines are balanced rather than filled greedily;
- a cue never spans a speaker change or a sentence end, so no cue opens with the tail of the
  sentence before it; a sentence too long for one cue is cut so its last cue is not one or two
  stray words;
- a cue stays up into the pause after its speech, long enough to read (at least MIN_SECONDS,
  about TARGET_CPS characters per second), without touching the next cue; a sentence too short
  to be read in the time before the next one joins its neighbour by the same speaker;
- no cue is shown for less than FLOOR_SECONDS, also between two speakers' turns: a short cue
  borrows from the pauses around it (it may appear up to LEAD_SECONDS before its first word, and
  the cue before gives up its linger); where there is no room, the short turn shares one cue with
  its neighbour, one line each, each line opened by its speaker's label (the usual two-speaker
  form); failing that, the next cue waits until the short one has had its time.

whisperx's writers cut greedily by width only, end cues on the last word and ignore the label's
width, which is what this module exists to fix. Pure functions of the result: no models here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

MIN_SECONDS = 1.0
"""Shortest time a cue is shown, when the pause after it allows."""
FLOOR_SECONDS = 0.8
"""Shortest time any cue is shown: under ~20 frames a cue flashes by unread (Netflix's minimum is 5/6 s)."""
LEAD_SECONDS = 0.3
"""How far a cue too short for FLOOR_SECONDS may appear before its first word, into the pause before it."""
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
    labels: list[str | None] = field(default_factory=list)
    """For each line, the speaker whose label opens it (None: no label)."""
    turns: list[tuple[str | None, list[TimedWord]]] = field(default_factory=list)
    """Two speakers' turns shown together, one line each; empty for a cue by one speaker."""

    @property
    def last_word_end(self) -> float:
        return max(word.end for word in self.words)


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
                if self.width(words[:index]) + first_indent <= self.max_line_width
                and self.width(words[index:]) <= self.max_line_width
            ]
            if cuts:
                best = min(cuts, key=lambda i: max(first_indent + self.width(words[:i]), self.width(words[i:])))
                return [words[:best], words[best:]]
        return greedy

    def width(self, words: list[str]) -> int:
        return len(self.joiner.join(words))

    def _greedy(self, words: list[str], first_indent: int) -> list[list[str]]:
        lines: list[list[str]] = []
        current: list[str] = []
        room = self.max_line_width - first_indent
        for word in words:
            if current and self.width([*current, word]) > room:
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


def _earliest_start(cues: list[Cue], index: int) -> float:
    """How early cue `index` may appear: up to LEAD_SECONDS before its words, once the cue before
    has been shown FLOOR_SECONDS and its last word is over."""
    cue = cues[index]
    earliest = max(0.0, cue.start - LEAD_SECONDS)
    if index > 0:
        before = cues[index - 1]
        earliest = max(earliest, max(before.last_word_end, before.start + FLOOR_SECONDS) + GAP_SECONDS)
    return min(cue.start, earliest)


def _too_short(cues: list[Cue], index: int) -> bool:
    """Whether cue `index` cannot be shown FLOOR_SECONDS between the cues around it."""
    if index + 1 == len(cues):
        return False
    return cues[index + 1].start - GAP_SECONDS - _earliest_start(cues, index) < FLOOR_SECONDS


def _one_line(words: list[TimedWord], speaker: str | None, layout: Layout) -> bool:
    return len(layout.label(speaker)) + layout.width([word.text for word in words]) <= layout.max_line_width


def _pair(cues: list[Cue], index: int, layout: Layout) -> tuple[int, list[Cue]] | None:
    """Cue `index` shown with the nearest words of a neighbour by another speaker, one line each.

    Returns where the two cues replaced begin and what replaces them (the rest of the neighbour, if
    any, and the shared cue); None when no neighbour can take it."""
    cue = cues[index]
    if cue.turns or cue.speaker is None or not _one_line(cue.words, cue.speaker, layout):
        return None
    options = []
    if index > 0:
        options.append((cue.start - cues[index - 1].last_word_end, index - 1))
    if index + 1 < len(cues):
        options.append((cues[index + 1].start - cue.last_word_end, index + 1))
    for _, other in sorted(options):  # the nearer neighbour first
        neighbour, after = cues[other], other > index
        if neighbour.turns or neighbour.speaker in (None, cue.speaker):
            continue
        words = neighbour.words if after else neighbour.words[::-1]  # nearest first
        taken = 0  # the neighbour's words nearest the short cue that fit on one line
        while taken < len(words) and _one_line(words[: taken + 1], neighbour.speaker, layout):
            taken += 1
        # What stays a cue of its own keeps a few words, not a stray one or two.
        while 1 < taken < len(words) and len(words) - taken < MIN_TAIL_WORDS:
            taken -= 1
        if not taken:
            continue
        near, rest = (words[:taken], words[taken:]) if after else (words[:taken][::-1], words[taken:][::-1])
        turns: list[tuple[str | None, list[TimedWord]]] = [(cue.speaker, cue.words), (neighbour.speaker, near)]
        if not after:
            turns.reverse()
        together = [word for _, turn in turns for word in turn]
        start, end = min(word.start for word in together), max(word.end for word in together)
        shared = Cue(start, end, turns[0][0], together, turns=turns)
        kept = [Cue(rest[0].start, max(word.end for word in rest), neighbour.speaker, rest)] if rest else []
        return min(index, other), [shared, *kept] if after else [*kept, shared]
    return None


def _pair_short_turns(cues: list[Cue], layout: Layout) -> list[Cue]:
    """Each cue too short for FLOOR_SECONDS even with what it may borrow shares a cue with a neighbour."""
    if layout.max_line_count < 2:
        return cues
    index = 0
    while index < len(cues):
        paired = _pair(cues, index, layout) if _too_short(cues, index) else None
        if paired is None:
            index += 1
            continue
        low, replacement = paired
        cues[low : low + 2] = replacement
        index = low + next(i for i, cue in enumerate(replacement) if cue.turns) + 1
    return cues


def _display_end(cue: Cue, next_start: float | None, layout: Layout) -> float:
    """Long enough to read, up to GAP_SECONDS before the next cue (even if the speech ran on)."""
    characters = len(layout.joiner.join(word.text for word in cue.words))
    wanted = max(cue.last_word_end + LINGER_SECONDS, cue.start + MIN_SECONDS, cue.start + characters / TARGET_CPS)
    if next_start is None:
        return wanted
    if next_start - GAP_SECONDS > cue.start:
        return min(wanted, next_start - GAP_SECONDS)
    return min(wanted, next_start)  # the next cue starts at once: no room for a gap


def _hold(cues: list[Cue]) -> None:
    """Every cue shown at least FLOOR_SECONDS: a short one first borrows from the pause before it,
    then, where that is not enough, the next cue waits for it."""
    for index, cue in enumerate(cues):
        if cue.end - cue.start >= FLOOR_SECONDS:
            continue
        start = max(_earliest_start(cues, index), cue.end - FLOOR_SECONDS)
        if start < cue.start:
            cue.start = start
            if index > 0:
                cues[index - 1].end = min(cues[index - 1].end, start - GAP_SECONDS)
        cue.end = max(cue.end, cue.start + FLOOR_SECONDS)
        if index + 1 < len(cues) and cues[index + 1].start < cue.end + GAP_SECONDS:
            cues[index + 1].start = cue.end + GAP_SECONDS


def build_cues(result: dict[str, Any], layout: Layout) -> list[Cue]:
    """The result's words cut into readable cues, in time order, none overlapping the next."""
    cues = [
        Cue(piece[0].start, max(word.end for word in piece), speaker, piece)
        for speaker, words in _sentences(result["segments"])
        for piece in _cut_sentence(words, speaker, layout)
    ]
    cues.sort(key=lambda cue: cue.start)
    cues = _pair_short_turns(_join_short(cues, layout), layout)
    for index, cue in enumerate(cues):
        next_start = cues[index + 1].start if index + 1 < len(cues) else None
        cue.end = _display_end(cue, next_start, layout)
    _hold(cues)
    for cue in cues:
        if cue.turns:
            cue.lines = [[word.text for word in words] for _, words in cue.turns]
            cue.labels = [speaker for speaker, _ in cue.turns]
        else:
            cue.lines = layout.lines([word.text for word in cue.words], len(layout.label(cue.speaker)))
            cue.labels = [cue.speaker] + [None] * (len(cue.lines) - 1)
    return cues
