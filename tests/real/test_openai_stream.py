"""`stream=true` and per-request speaker references on /v1/audio/transcriptions, with the real models,
read by the official `openai` SDK."""

from __future__ import annotations

import base64
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from pyannote.core import Annotation, Segment

from bench.diarization import make_dialogue, speak, write_wav
from tests.conftest import ffmpeg
from tests.real.conftest import API_KEY, AUTH, KNOWN_TEXT, Server, word_error_rate

REFERENCE_LINES = [
    "Hello, my name is on this recording so that the service can learn my voice.",
    "I usually speak a little slowly, and I like to read the news in the morning.",
]
DIALOGUE = [
    ("michael", "Has the delivery from the paper mill arrived yet?"),
    ("f4", "It came this morning, but two boxes were damaged."),
    ("michael", "Thank you. Please ask for a refund rather than new boxes."),
    ("f4", "Then I will order the rest from the shop next door."),
]


def _sdk(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0, timeout=600)


@pytest.fixture(scope="module")
def two_chunks(known_speech: Path, media_dir: Path) -> Path:
    """About 45 s of speech: two 30-s chunks for Whisper."""
    target = media_dir / "two-chunks.wav"
    ffmpeg("-stream_loop", "2", "-i", str(known_speech), "-c", "copy", str(target))
    return target


def test_text_streams_while_a_file_is_transcribed(server: Server, two_chunks: Path) -> None:
    """Two 30-s chunks, one a batch (BATCH_SIZE=1): the first text comes with the first chunk, while
    the second is still being transcribed."""
    deltas: list[str] = []
    with two_chunks.open("rb") as audio:
        stream = _sdk(server).audio.transcriptions.create(model="whisper-1", file=audio, language="en", stream=True)
        for event in stream:
            if event.type == "transcript.text.delta":
                if not deltas:
                    tasks = httpx.get(f"{server.url}/api/v1/transcribe/tasks", headers=AUTH).json()["tasks"]
                    streamed = [task for task in tasks if task["file_name"] == two_chunks.name]
                    assert [task["status"] for task in streamed] == ["processing"]
                    assert streamed[0]["progress"] < 60  # transcription is 60 % of a task without speakers
                deltas.append(event.delta)
            else:
                assert event.type == "transcript.text.done"
                done = event.text
    assert len(deltas) >= 2  # a piece a chunk at least
    assert word_error_rate(" ".join([KNOWN_TEXT] * 3), done) < 0.1
    assert word_error_rate(done, "".join(deltas)) < 0.05  # the deltas are the text, as first transcribed


def _data_url(path: Path) -> str:
    return "data:audio/wav;base64," + base64.b64encode(path.read_bytes()).decode()


def _reference(voice: str, workdir: Path) -> str:
    audio = np.concatenate([speak(line, voice, workdir / f"{voice}-{i}.wav") for i, line in enumerate(REFERENCE_LINES)])
    write_wav(workdir / f"{voice}-reference.wav", audio)
    return _data_url(workdir / f"{voice}-reference.wav")


def test_known_speakers_name_the_segments_of_a_streamed_dialogue(server: Server, tmp_path: Path) -> None:
    case = make_dialogue("two-voices", DIALOGUE, 0.4, tmp_path)
    reference: Annotation = case.reference  # type: ignore[assignment]
    events: list[Any] = []
    with (tmp_path / "two-voices.wav").open("rb") as audio:
        stream = _sdk(server).audio.transcriptions.create(
            model="gpt-4o-transcribe-diarize", file=audio, response_format="diarized_json", stream=True,
            known_speaker_names=["Michael", "Fiona"],
            known_speaker_references=[_reference("michael", tmp_path), _reference("f4", tmp_path)],
        )  # fmt: skip
        events.extend(stream)
    kinds = [event.type for event in events]
    assert kinds[-1] == "transcript.text.done"
    first_segment = kinds.index("transcript.text.segment")
    assert set(kinds[:first_segment]) == {"transcript.text.delta"}
    assert set(kinds[first_segment:-1]) == {"transcript.text.segment"}
    names: dict[str, Counter[str]] = {"michael": Counter(), "f4": Counter()}
    for segment in events[first_segment:-1]:
        middle = (segment.start + segment.end) / 2
        voices = reference.crop(Segment(middle - 0.01, middle + 0.01)).labels()
        if voices:
            names[voices[0]][segment.speaker] += 1
    assert names["michael"].most_common(1)[0][0] == "Michael", names
    assert names["f4"].most_common(1)[0][0] == "Fiona", names
    assert "damaged" in events[-1].text
