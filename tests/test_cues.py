"""Subtitle cues on synthetic word lists: the edge cases of the readability rules."""

from __future__ import annotations

import random
from itertools import pairwise
from typing import Any

import srt
import webvtt

from app.formats.cues import FLOOR_SECONDS, GAP_SECONDS, LEAD_SECONDS, MIN_SECONDS, TARGET_CPS, Cue, Layout, build_cues
from app.formats.exports import ExportFormat, SubtitleOptions, render


def _result(text: str, speaker: str | None = "SPEAKER_00", start: float = 0.0, step: float = 0.3) -> dict[str, Any]:
    """One segment whose words follow each other every `step` seconds."""
    words = [
        {"word": word, "start": start + i * step, "end": start + i * step + step * 0.8, "speaker": speaker}
        for i, word in enumerate(text.split())
    ]
    return {"start": start, "end": words[-1]["end"], "text": text, "speaker": speaker, "words": words}


def _cues(*segments: dict[str, Any], layout: Layout | None = None) -> list[Cue]:
    return build_cues({"language": "en", "segments": list(segments)}, layout or Layout())


def _shown(cue: Cue) -> str:
    return " ".join(" ".join(line) for line in cue.lines)


LONG = (
    "In the third quarter we spent a good deal more on cloud servers than we had planned, "
    "mostly because the new analytics jobs ran every hour instead of once a day."
)


def test_lines_count_the_speaker_label() -> None:
    layout = Layout()
    cues = _cues(_result(LONG), layout=layout)
    assert len(cues) > 1
    for cue in cues:
        assert len(cue.lines) <= 2
        first, *rest = [" ".join(line) for line in cue.lines]
        assert len(layout.label(cue.speaker) + first) <= 42
        assert all(len(line) <= 42 for line in rest)
    assert " ".join(_shown(cue) for cue in cues) == LONG


def test_two_lines_are_balanced() -> None:
    cue = _cues(_result("one two three four five six seven eight nine ten eleven twelve", speaker=None))[0]
    top, bottom = (len(" ".join(line)) for line in cue.lines)
    assert abs(top - bottom) <= 6, cue.lines


def test_cues_break_at_sentence_ends_and_never_open_with_a_tail() -> None:
    text = "We went over budget on the cloud servers this quarter by a lot. Next we talk about hiring."
    cues = _cues(_result(text))
    assert [_shown(cue) for cue in cues][-1] == "Next we talk about hiring."
    assert all(not _shown(cue).startswith("lot.") for cue in cues)


def test_a_long_sentence_ends_on_more_than_a_stray_word_or_two() -> None:
    # Greedy filling would leave "full day." alone in the last cue.
    text = "The migration of every customer database to the new cluster in the other region took a full day."
    cues = _cues(_result(text))
    assert len(cues) >= 2
    assert len(_shown(cues[-1]).split()) >= 3, [_shown(cue) for cue in cues]


def test_a_speaker_change_inside_a_segment_starts_a_cue() -> None:
    segment = _result("Shall we start now? Yes let us begin")
    for word in segment["words"][4:]:
        word["speaker"] = "SPEAKER_01"
    cues = _cues(segment)
    assert [(cue.speaker, _shown(cue)) for cue in cues] == [
        ("SPEAKER_00", "Shall we start now?"),
        ("SPEAKER_01", "Yes let us begin"),
    ]


def test_a_short_cue_stays_up_into_the_pause_but_clear_of_the_next() -> None:
    good = _result("Good.", start=0.0)  # 0.24 s of speech
    late = _result("Then we carry on with the next point.", speaker="SPEAKER_01", start=3.0)
    cues = _cues(good, late)
    assert cues[0].end - cues[0].start >= MIN_SECONDS
    close = _result("Then we carry on with the next point.", speaker="SPEAKER_01", start=0.9)
    cues = _cues(good, close)
    assert cues[0].end <= 0.9 - GAP_SECONDS + 1e-9
    assert cues[0].end >= good["end"]


def test_cues_stay_up_long_enough_to_read() -> None:
    fast = _result("Quarterly infrastructure expenditure exceeded expectations.", step=0.15)
    cue = _cues(fast, _result("Right.", speaker="SPEAKER_01", start=10.0))[0]
    assert len(_shown(cue)) / (cue.end - cue.start) <= TARGET_CPS + 0.01


def test_a_short_sentence_joins_its_neighbour_by_the_same_speaker() -> None:
    cues = _cues(_result("Good.", start=0.0), _result("Let us start.", start=0.4))
    assert [_shown(cue) for cue in cues] == ["Good. Let us start."]
    # Another speaker's answer is not joined to the question when there is time to show each alone.
    cues = _cues(_result("Ready?", start=0.0), _result("Yes.", speaker="SPEAKER_01", start=1.5))
    assert [_shown(cue) for cue in cues] == ["Ready?", "Yes."]


def test_a_long_pause_inside_a_sentence_starts_a_cue() -> None:
    first = _result("and then", start=0.0)
    after = _result("we left.", start=5.0)
    segment = {**first, "end": after["end"], "text": "and then we left.", "words": first["words"] + after["words"]}
    assert [_shown(cue) for cue in _cues(segment)] == ["and then", "we left."]


def test_untimed_words_and_wordless_segments_are_kept_in_order() -> None:
    segment = _result("one two three four")
    segment["words"][1] = {"word": "two", "speaker": "SPEAKER_00"}
    long_text = " ".join(["five six seven eight"] * 6)
    wordless = {"start": 5.0, "end": 15.0, "text": f" {long_text}", "speaker": "SPEAKER_00", "words": []}
    cues = _cues(segment, wordless)
    assert " ".join(_shown(cue) for cue in cues) == f"one two three four {long_text}"
    assert all(a.end < b.start for a, b in pairwise(cues))
    assert len(cues) >= 3, "a segment without word times is still cut to the line limits"


def test_a_narrow_width_still_shows_every_word() -> None:
    cues = _cues(_result("extraordinarily long words everywhere"), layout=Layout(max_line_width=10, max_line_count=1))
    assert " ".join(_shown(cue) for cue in cues) == "extraordinarily long words everywhere"
    assert all(len(cue.lines) == 1 for cue in cues)


def test_languages_without_spaces_join_words_without_them() -> None:
    segment = _result("今日 は 晴れ です。", speaker=None)
    result = {"language": "ja", "segments": [segment]}
    assert [cue.content for cue in srt.parse(render(result, ExportFormat.SRT))] == ["今日は晴れです。"]


def test_vtt_has_voice_tags_and_escapes_markup() -> None:
    result = {"language": "en", "segments": [_result('"Tom" & Jerry --> <b>show</b>')]}
    caption = webvtt.from_string(render(result, ExportFormat.VTT)).captions[0]
    assert caption.voice == "SPEAKER_00"
    # Cut as the SRT is, where the label counts in the width: the same cues in both formats.
    assert caption.raw_text == '<v SPEAKER_00>"Tom" &amp;\nJerry -&gt; &lt;b&gt;show&lt;/b&gt;'


def test_highlighted_words_follow_the_speech() -> None:
    result = {"language": "en", "segments": [_result("one two three")]}
    cues = list(srt.parse(render(result, ExportFormat.SRT, SubtitleOptions(highlight_words=True))))
    assert [cue.content for cue in cues] == [
        "[SPEAKER_00]: <u>one</u> two three",
        "[SPEAKER_00]: one <u>two</u> three",
        "[SPEAKER_00]: one two <u>three</u>",
    ]
    assert all(a.end <= b.start for a, b in pairwise(cues))


def _check(cues: list[Cue], *segments: dict[str, Any]) -> None:
    """Every cue shown FLOOR_SECONDS or more, none touching the next, every word once and in order."""
    spoken = [word["word"] for segment in segments for word in segment["words"]]
    assert all(cue.end - cue.start >= FLOOR_SECONDS - 1e-9 for cue in cues), [(c.start, c.end) for c in cues]
    assert all(a.end < b.start for a, b in pairwise(cues))
    assert [word.text for cue in cues for word in cue.words] == spoken
    assert " ".join(_shown(cue) for cue in cues).split() == spoken


def test_a_short_turn_borrows_from_the_pause_before_it() -> None:
    before = _result("We looked at the figures.", start=0.0)  # ends at 1.44 s
    good = _result("Good.", speaker="SPEAKER_01", start=3.0)
    after = _result("So we carry on with the next point.", start=3.65)
    cues = _cues(before, good, after)
    _check(cues, before, good, after)
    shown = [_shown(cue) for cue in cues]
    assert shown == ["We looked at the figures.", "Good.", "So we carry on with the next point."]
    assert 3.0 - LEAD_SECONDS - 1e-9 <= cues[1].start < 3.0, "shown a little before its word, in the pause"
    assert cues[1].end <= 3.65 - GAP_SECONDS + 1e-9, "and gone before the next turn starts"


def test_a_short_turn_without_room_shares_a_cue_with_its_neighbour_one_line_each() -> None:
    ready = _result("Ready?", start=0.0)
    yes = _result("Yes.", speaker="SPEAKER_01", start=0.5)
    cues = _cues(ready, yes)
    _check(cues, ready, yes)
    [cue] = cues
    assert cue.lines == [["Ready?"], ["Yes."]]
    assert cue.labels == ["SPEAKER_00", "SPEAKER_01"]
    result = {"language": "en", "segments": [ready, yes]}
    [subtitle] = srt.parse(render(result, ExportFormat.SRT))
    assert subtitle.content == "[SPEAKER_00]: Ready?\n[SPEAKER_01]: Yes."
    [caption] = webvtt.from_string(render(result, ExportFormat.VTT)).captions
    assert caption.raw_text == "<v SPEAKER_00>Ready?</v>\n<v SPEAKER_01>Yes.</v>"


def test_between_two_long_turns_only_the_nearest_words_join_the_short_one() -> None:
    first = _result(LONG, start=0.0)
    good = _result("Good.", speaker="SPEAKER_01", start=first["end"] + 0.1)
    last = _result(LONG, start=good["end"] + 0.2)
    cues = _cues(first, good, last)
    _check(cues, first, good, last)
    [shared] = [cue for cue in cues if "Good." in _shown(cue)]
    assert sorted(shared.labels) == ["SPEAKER_00", "SPEAKER_01"]
    widths = [len(f"[{speaker}]: " + " ".join(line)) for line, speaker in zip(shared.lines, shared.labels, strict=True)]
    assert len(widths) == 2
    assert max(widths) <= 42


def test_with_one_line_a_cue_the_next_cue_waits() -> None:
    ready = _result("Ready?", start=0.0)
    yes = _result("Yes.", speaker="SPEAKER_01", start=0.5)
    cues = _cues(ready, yes, layout=Layout(max_line_count=1))
    _check(cues, ready, yes)
    assert [cue.speaker for cue in cues] == ["SPEAKER_00", "SPEAKER_01"]
    assert cues[1].start == cues[0].end + GAP_SECONDS


def test_no_cue_is_shorter_than_the_floor_in_quick_exchanges() -> None:
    """Seeded random conversations: turns of one to twelve words, 0-1.5 s apart, words 0.15-0.5 s."""
    generator = random.Random(7)  # noqa: S311 - reproducible test data, not secrets
    for layout in (Layout(), Layout(max_line_count=1), Layout(max_line_width=20)):
        for _ in range(150):
            segments, time = [], 0.0
            for turn in range(generator.randint(1, 8)):
                words = [generator.choice(["yes", "no", "right.", "good", "the", "budget", "okay?"])
                         for _ in range(generator.randint(1, 12))]  # fmt: skip
                segment = _result(" ".join(words), f"SPEAKER_0{turn % 2}", time, generator.uniform(0.15, 0.5))
                segments.append(segment)
                time = segment["end"] + generator.uniform(0.0, 1.5)
            _check(_cues(*segments, layout=layout), *segments)
