"""Real recordings kept in the repository (tests/data/real/manifest.json) through the API with no
language and no speaker hint, as a new user sends them.

The bounds come from `python -m bench.real` and `python -m bench.voice_count` (docs/benchmarks.md,
"Real recordings"), with margin: the speaker-count cases are held-out files, which nothing was tuned
on, and each is the file of its kind furthest from the clustering's decision; the meeting's cpWER
bound sits 0.05 above the bench's figure.
"""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import httpx
import pytest
import srt

from bench.real import Recording, cpwer, flips, recordings
from tests.real.conftest import AUTH, Server, submit, wait_done

# bench.real on ami-remote-design: cpWER 0.247 before word-speaker smoothing, 0.242 after.
MAX_MEETING_CPWER = 0.29
MIN_CUE = timedelta(seconds=0.8)


def _recording(name: str) -> Recording:
    (recording,) = recordings(only=[name])
    return recording


def _transcribe(recording: Recording) -> tuple[str, dict[str, Any]]:
    task_id = submit(recording.path)
    done = wait_done(task_id)
    assert done["status"] == "completed", done["error"]
    result: dict[str, Any] = done["result"]
    return task_id, result


def _words(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [word for segment in result["segments"] for word in segment["words"]]


def _seconds(value: timedelta) -> float:
    return value.total_seconds()


@pytest.fixture(scope="module")
def meeting(server: Server) -> tuple[Recording, str, dict[str, Any]]:
    """The four-person AMI design meeting (60 s, overlapping speech, each speaker's words known)."""
    recording = _recording("ami-remote-design")
    return recording, *_transcribe(recording)


def test_one_person_reading_for_fifty_seconds_is_one_speaker(server: Server) -> None:
    recording = _recording("lj-fireside-chat")  # 49 s, one woman; held out; bench.voice_count margin +0.16
    _, result = _transcribe(recording)
    assert result["language"] == "en"
    assert [speaker["speaker"] for speaker in result["speakers"]] == ["SPEAKER_00"]
    assert {word["speaker"] for word in _words(result)} == {"SPEAKER_00"}


def test_a_two_person_meeting_excerpt_keeps_two_speakers(server: Server) -> None:
    recording = _recording("ami-debug-dev01")  # 30 s, two people; held out; bench.voice_count margin +0.12
    _, result = _transcribe(recording)
    assert len(result["speakers"]) == 2, result["speakers"]
    assert len({word["speaker"] for word in _words(result)}) == 2


def test_a_four_person_meeting_keeps_each_speakers_words_together(
    meeting: tuple[Recording, str, dict[str, Any]],
) -> None:
    """cpWER: each found speaker's words against one reference speaker's, in the best pairing."""
    recording, _, result = meeting
    assert recording.transcript is not None
    words = _words(result)
    by_speaker: dict[str, list[str]] = {}
    for word in words:
        by_speaker.setdefault(str(word["speaker"]), []).append(word["word"])
    error = cpwer(recording.transcript, {speaker: " ".join(said) for speaker, said in by_speaker.items()})
    print(f"\n[real] ami-remote-design: cpWER {error:.3f}, {len(by_speaker)} speakers, {flips(words)} flips")
    assert error <= MAX_MEETING_CPWER, f"cpWER {error:.3f}"


def test_every_subtitle_cue_of_a_real_meeting_stays_up_long_enough(
    server: Server, meeting: tuple[Recording, str, dict[str, Any]]
) -> None:
    _, task_id, result = meeting
    response = httpx.get(f"{server.url}/api/v1/transcribe/result/{task_id}", headers=AUTH, params={"format": "srt"})
    assert response.status_code == 200, response.text
    cues = list(srt.parse(response.text))
    short = [(cue.content, _seconds(cue.end - cue.start)) for cue in cues if cue.end - cue.start < MIN_CUE]
    assert not short, short
    assert all(first.end <= second.start for first, second in itertools.pairwise(cues)), "cues never overlap"
    # Never a word dropped: every word of the transcript is in a cue, in order.
    cue_words = " ".join(cue.content for cue in cues).split()
    spoken = [word["word"] for word in _words(result)]
    position = 0
    for word in spoken:
        assert word in cue_words[position:], f"{word!r} is in no cue after word {position}"
        position = cue_words.index(word, position) + 1
