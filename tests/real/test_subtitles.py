"""Subtitles of a real two-voice dialogue, measured against broadcast reading guidelines.

Long sentences that need several cues, one-word answers, and turns 0.4 s apart: the SRT, VTT and
TSV the API returns are parsed with the `srt` and `webvtt-py` packages and measured.
"""

from __future__ import annotations

import re
import statistics
from datetime import timedelta
from itertools import pairwise
from typing import Any

import httpx
import pytest
import srt
import webvtt

from bench.diarization import make_dialogue
from tests.real.conftest import AUTH, Server, submit, wait_done, word_error_rate

TURNS = [
    ("michael", "Thanks for joining. Let us go through the budget for the third quarter before lunch."),
    ("f4", "Sure."),
    (
        "michael",
        "We spent a good deal more on cloud servers than we had planned, mostly because the new reports "
        "ran every hour instead of once a day.",
    ),
    ("f4", "That sounds expensive. Can we move them back to a daily schedule?"),
    ("michael", "Yes."),
    ("f4", "Good. Then I will ask the data team to change it this afternoon and check the bill next month."),
    ("michael", "Perfect. One more thing: the office move is now planned for the second week of March."),
    ("f4", "Fine by me."),
]
TEXT = " ".join(text for _, text in TURNS)
LABEL = re.compile(r"^\[(SPEAKER_\d+)\]: ")
# Each line of a cue holding two speakers' turns opens with its own label.
LINE_LABEL = re.compile(r"^\[SPEAKER_\d+\]: ", re.MULTILINE)
SENTENCE_END = re.compile(r"[.?!]$")


@pytest.fixture(scope="module")
def result(server: Server, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("subtitles")
    make_dialogue("meeting", TURNS, 0.4, folder)
    task_id = submit(folder / "meeting.wav", language="en")
    done = wait_done(task_id)
    assert done["status"] == "completed", done
    return task_id, done["result"]


def _export(server: Server, task_id: str, fmt: str, **params: object) -> str:
    response = httpx.get(
        f"{server.url}/api/v1/transcribe/result/{task_id}", headers=AUTH, params={"format": fmt, **params}
    )
    assert response.status_code == 200, response.text
    return response.text


def _seconds(value: timedelta) -> float:
    return value.total_seconds()


def test_srt_follows_the_reading_guidelines(server: Server, result: tuple[str, dict[str, Any]]) -> None:
    task_id, transcript = result
    check_readable(_export(server, task_id, "srt"), transcript)


def check_readable(subtitles: str, transcript: dict[str, Any]) -> None:
    """Every guideline measured on the SRT, its words found in the transcript by counting them."""
    cues = list(srt.parse(subtitles))
    words = [word for segment in transcript["segments"] for word in segment["words"]]
    texts = [LINE_LABEL.sub("", cue.content).replace("\n", " ") for cue in cues]
    assert word_error_rate(TEXT, " ".join(texts)) <= 0.2
    assert " ".join(texts).split() == [word["word"].strip() for word in words], "every word, in order"

    lines = [line for cue in cues for line in cue.content.splitlines()]
    assert max(len(line) for line in lines) <= 42, "the label counts in the 42-character width"
    assert max(len(cue.content.splitlines()) for cue in cues) <= 2
    assert all(LABEL.match(cue.content) for cue in cues), "every cue names its speaker"
    assert all(a.end < b.start for a, b in pairwise(cues)), "no cue touches the next"

    # Each cue stays up after its last word, into the pause; its last word is found by counting words.
    consumed = 0
    lingers, durations, speeds = [], [], []
    for index, (cue, text) in enumerate(zip(cues, texts, strict=True)):
        consumed += len(text.split())
        last_word_end = words[consumed - 1]["end"] or _seconds(cue.start)  # an untimed word: no bound
        shown = _seconds(cue.end - cue.start)
        # Held until the next cue starts (less a gap): its speech may even run into the next one's.
        held_to_next = index + 1 < len(cues) and _seconds(cues[index + 1].start - cue.end) < 0.1
        lingers.append(_seconds(cue.end) - last_word_end)
        durations.append(shown)
        speeds.append(len(text) / shown)
        assert _seconds(cue.end) >= last_word_end - 0.01 or held_to_next, (text, cue.end, last_word_end)
        # At least 0.8 s on screen, also between two speakers' turns.
        assert shown >= 0.8, (text, shown)
        assert len(text) / shown <= 20, (text, shown)
    assert statistics.median(lingers) >= 0.3, lingers
    assert statistics.median(speeds) <= 17, speeds
    assert min(durations) >= 0.8, durations

    # No stray tails: a sentence split over cues ends on three words or more, and every cue that
    # follows a sentence end by the same speaker starts a new sentence.
    for (first, first_text), (second, second_text) in pairwise(zip(cues, texts, strict=True)):
        last_label = LINE_LABEL.findall(first.content)[-1]
        same_speaker = last_label == LINE_LABEL.findall(second.content)[0]
        if same_speaker and not SENTENCE_END.search(first_text):
            assert len(second_text.split()) >= 3, (first_text, second_text)


def test_options_set_the_width_and_line_count(server: Server, result: tuple[str, dict[str, Any]]) -> None:
    task_id, _ = result
    narrow = list(srt.parse(_export(server, task_id, "srt", max_line_width=30, max_line_count=1)))
    assert max(len(cue.content) for cue in narrow) <= 30
    assert all("\n" not in cue.content for cue in narrow)
    assert len(narrow) > len(list(srt.parse(_export(server, task_id, "srt"))))


def test_vtt_and_tsv_carry_the_speakers(server: Server, result: tuple[str, dict[str, Any]]) -> None:
    task_id, transcript = result
    cues = list(srt.parse(_export(server, task_id, "srt")))
    captions = webvtt.from_string(_export(server, task_id, "vtt")).captions
    labels = {segment["speaker"] for segment in transcript["segments"]}
    assert len(labels) == 2
    assert [caption.voice for caption in captions] == [LABEL.match(cue.content).group(1) for cue in cues]  # type: ignore[union-attr]
    assert [caption.text for caption in captions] == [LINE_LABEL.sub("", cue.content) for cue in cues]
    assert [caption.start_in_seconds for caption in captions] == [int(_seconds(cue.start)) for cue in cues]

    header, *rows = [line.split("\t") for line in _export(server, task_id, "tsv").splitlines()]
    assert header == ["start", "end", "text", "speaker"]
    assert [row[3] for row in rows] == [segment["speaker"] for segment in transcript["segments"]]
    assert [row[2] for row in rows] == [segment["text"].strip() for segment in transcript["segments"]]
