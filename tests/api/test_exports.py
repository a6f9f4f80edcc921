"""GET result?format=…: subtitle and text exports, read back with real SRT and WebVTT parsers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from itertools import pairwise
from pathlib import Path

import pytest
import srt
import webvtt
from fastapi.testclient import TestClient

from tests.api.conftest import AUTH, upload, wait_for_status
from tests.fakes import FAKE_LONG_TEXT, FAKE_TEXT


@pytest.fixture
def task_id(client: TestClient, short_speech: Path) -> str:
    task_id: str = upload(client, short_speech)["task_id"]
    wait_for_status(client, task_id, {"completed"})
    return task_id


def _export(client: TestClient, task_id: str, fmt: str, **params: object) -> tuple[str, dict[str, str]]:
    response = client.get(f"/api/v1/transcribe/result/{task_id}", headers=AUTH, params={"format": fmt, **params})
    assert response.status_code == 200, response.text
    return response.text, dict(response.headers)


def _words(text: str) -> list[str]:
    return text.replace("[SPEAKER_00]:", "").replace("[SPEAKER_01]:", "").split()


def test_srt_parses_with_speakers_split_lines_and_word_times(client: TestClient, task_id: str) -> None:
    text, headers = _export(client, task_id, "srt")
    assert headers["content-type"] == "application/x-subrip; charset=utf-8"
    assert headers["content-disposition"] == "attachment; filename=\"short.srt\"; filename*=UTF-8''short.srt"
    cues = list(srt.parse(text))
    assert [cue.index for cue in cues] == list(range(1, len(cues) + 1))
    # The fake's words last 0.5 s and start on whole seconds: a cue starts on its first word and
    # stays up into the pause after its last one (1.5 s), clear of the next cue (3 s).
    assert cues[0].content == f"[SPEAKER_00]: {FAKE_TEXT}"
    assert cues[0].start == timedelta(0)
    assert timedelta(seconds=1.5) < cues[0].end < timedelta(seconds=3)
    long_cues = cues[1:]
    assert len(long_cues) >= 2, "the long segment is cut into several cues"
    assert all(cue.content.startswith("[SPEAKER_01]: ") for cue in long_cues)
    assert all(len(cue.content.splitlines()) <= 2 for cue in cues)
    lines = [line for cue in cues for line in cue.content.splitlines()]
    assert max(len(line) for line in lines) <= 42, "the speaker label counts in the line width"
    assert _words(" ".join(cue.content for cue in long_cues)) == FAKE_LONG_TEXT.split()
    assert long_cues[0].start == timedelta(seconds=3)
    assert all(a.end < b.start for a, b in pairwise(cues))


def test_vtt_parses_and_matches_the_srt(client: TestClient, task_id: str) -> None:
    text, headers = _export(client, task_id, "vtt")
    assert headers["content-type"] == "text/vtt; charset=utf-8"
    assert headers["content-disposition"] == "attachment; filename=\"short.vtt\"; filename*=UTF-8''short.vtt"
    captions = webvtt.from_string(text).captions
    cues = list(srt.parse(_export(client, task_id, "srt")[0]))
    # The speaker is a voice tag, not text: the words and times are the SRT's.
    assert [caption.voice for caption in captions] == [cue.content[1:11] for cue in cues]
    assert [caption.raw_text.startswith(f"<v {caption.voice}>") for caption in captions] == [True] * len(cues)
    assert [caption.text for caption in captions] == [cue.content[len("[SPEAKER_00]: ") :] for cue in cues]
    assert [caption.start_in_seconds for caption in captions] == [int(cue.start.total_seconds()) for cue in cues]


def test_line_options_change_the_cut(client: TestClient, task_id: str) -> None:
    text, _ = _export(client, task_id, "srt", max_line_width=20, max_line_count=1)
    cues = list(srt.parse(text))
    assert all("\n" not in cue.content for cue in cues)
    assert len(cues) > len(list(srt.parse(_export(client, task_id, "srt")[0])))
    highlighted = webvtt.from_string(_export(client, task_id, "vtt", highlight_words="true")[0]).captions
    assert "<u>fake</u>" in highlighted[0].raw_text


def test_txt_and_tsv(client: TestClient, task_id: str) -> None:
    text, headers = _export(client, task_id, "txt")
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert text.splitlines() == [f"[SPEAKER_00]: {FAKE_TEXT}", f"[SPEAKER_01]: {FAKE_LONG_TEXT}"]
    text, headers = _export(client, task_id, "tsv")
    assert headers["content-type"] == "text/tab-separated-values; charset=utf-8"
    assert headers["content-disposition"] == "attachment; filename=\"short.tsv\"; filename*=UTF-8''short.tsv"
    rows = [line.split("\t") for line in text.splitlines()]
    assert rows[0] == ["start", "end", "text", "speaker"]
    assert rows[1] == ["0", "1500", FAKE_TEXT, "SPEAKER_00"]
    assert rows[2] == ["3000", "20500", FAKE_LONG_TEXT, "SPEAKER_01"]


def test_json_stays_the_default(client: TestClient, task_id: str) -> None:
    default = client.get(f"/api/v1/transcribe/result/{task_id}", headers=AUTH)
    explicit = client.get(f"/api/v1/transcribe/result/{task_id}?format=json", headers=AUTH)
    assert default.headers["content-type"] == "application/json"
    assert default.json() == explicit.json()
    assert default.json()["segments"][0]["text"] == FAKE_TEXT


def test_without_speakers_there_is_no_prefix(client: TestClient, short_speech: Path) -> None:
    task_id = upload(client, short_speech, enable_diarization="false")["task_id"]
    wait_for_status(client, task_id, {"completed"})
    cues = list(srt.parse(_export(client, task_id, "srt")[0]))
    assert cues[0].content == FAKE_TEXT


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("format=docx", "format: Input should be 'json', 'srt', 'vtt', 'txt' or 'tsv'"),
        ("format=srt&max_line_width=3", "max_line_width: Input should be greater than or equal to 10"),
        ("format=srt&max_line_count=0", "max_line_count: Input should be greater than or equal to 1"),
    ],
)
def test_bad_export_options_are_422(client: TestClient, task_id: str, query: str, detail: str) -> None:
    response = client.get(f"/api/v1/transcribe/result/{task_id}?{query}", headers=AUTH)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == detail


def test_unfinished_task_has_no_export(make_client: Callable[..., TestClient], short_speech: Path) -> None:
    client = make_client({"FAKE_STEP_SECONDS": "0.2"})
    task_id = upload(client, short_speech)["task_id"]
    response = client.get(f"/api/v1/transcribe/result/{task_id}?format=srt", headers=AUTH)
    assert response.status_code == 409
