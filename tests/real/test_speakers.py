"""Enrolled voices on real speech through the HTTP API: espeak-ng voices that the speaker encoder
tells apart (bench/diarization.py), enrolled from sentences that the dialogues do not use."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pyannote.core import Annotation, Segment

from bench.diarization import Case, make_dialogue, speak, write_wav
from tests.conftest import free_port
from tests.real.conftest import AUTH, Server, serving, submit, wait_done

OTHER_KEY = "another-api-key"
OTHER = {"X-API-Key": OTHER_KEY}
ENROLMENT = [
    "Hello, my name is on this recording so that the service can learn my voice.",
    "I usually speak a little slowly, and I like to read the news in the morning.",
]
DIALOGUE = [
    ("michael", "Has the delivery from the paper mill arrived yet?"),
    ("f4", "It came this morning, but two boxes were damaged."),
    ("nyc_m5", "I can send them back before the post office closes."),
    ("michael", "Thank you. Please ask for a refund rather than new boxes."),
    ("f4", "Then I will order the rest from the shop next door."),
    ("nyc_m5", "Fine by me, their prices are lower anyway."),
    ("michael", "Good, that settles it for today."),
]
# The same voices on another day, in other words: a voice enrolled from the first dialogue is named here.
LATER_DIALOGUE = [
    ("nyc_m5", "The train was late again, so I walked from the bridge."),
    ("michael", "Did you remember to bring the keys to the garage?"),
    ("f4", "They are in the blue drawer beside the kitchen window."),
    ("nyc_m5", "I will fetch them after I have finished my coffee."),
    ("michael", "No hurry, the mechanic only comes at four o'clock."),
    ("f4", "Then we have time to water the plants in the yard."),
    ("nyc_m5", "Let us do that first, before the sun gets too strong."),
]


@pytest.fixture(scope="module")
def two_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The service with two API keys, one worker."""
    from tests.real.conftest import API_KEY

    workdir = tmp_path_factory.mktemp("speakers")
    with serving(workdir, free_port(), API_KEYS=f"{API_KEY},{OTHER_KEY}", MAX_CONCURRENT_TASKS="1") as running:
        yield running


@pytest.fixture(scope="module")
def dialogue(tmp_path_factory: pytest.TempPathFactory) -> tuple[Case, Path]:
    workdir = tmp_path_factory.mktemp("dialogue")
    case = make_dialogue("three-voices", DIALOGUE, 0.3, workdir)
    return case, workdir / "three-voices.wav"


@pytest.fixture(scope="module")
def later_dialogue(tmp_path_factory: pytest.TempPathFactory) -> tuple[Case, Path]:
    workdir = tmp_path_factory.mktemp("later-dialogue")
    case = make_dialogue("three-voices-later", LATER_DIALOGUE, 0.3, workdir)
    return case, workdir / "three-voices-later.wav"


def _sample(voice: str, workdir: Path) -> Path:
    audio = np.concatenate([speak(line, voice, workdir / f"{voice}-{i}.wav") for i, line in enumerate(ENROLMENT)])
    write_wav(workdir / f"{voice}-sample.wav", audio)
    return workdir / f"{voice}-sample.wav"


def _enrol(server: Server, name: str, sample: Path) -> dict[str, Any]:
    with sample.open("rb") as audio:
        response = httpx.post(
            f"{server.url}/api/v1/speakers", headers=AUTH, data={"name": name}, files={"file": audio}, timeout=120
        )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def _names_on_each_voice(case: Case, result: dict[str, Any]) -> dict[str, Counter[str]]:
    """How many of each reference voice's words carry each speaker name."""
    reference: Annotation = case.reference  # type: ignore[assignment]
    said: dict[str, Counter[str]] = {voice: Counter() for voice in reference.labels()}
    for segment in result["segments"]:
        for word in segment["words"]:
            if word["start"] is None:
                continue
            middle = (word["start"] + word["end"]) / 2
            voices = reference.crop(Segment(middle - 0.01, middle + 0.01)).labels()
            if voices:
                said[voices[0]][word["speaker"]] += 1
    return said


def _name_of_each_voice(case: Case, result: dict[str, Any]) -> dict[str, str]:
    """The speaker name most of each reference voice's words carry."""
    return {voice: names.most_common(1)[0][0] for voice, names in _names_on_each_voice(case, result).items()}


def test_enrolled_voices_are_named_and_a_stranger_is_not(
    two_keys: Server, dialogue: tuple[Case, Path], later_dialogue: tuple[Case, Path], tmp_path: Path
) -> None:
    case, audio = dialogue
    michael = _enrol(two_keys, "Michael", _sample("michael", tmp_path))
    fiona = _enrol(two_keys, "Fiona", _sample("f4", tmp_path))
    assert michael["samples"] == fiona["samples"] == 1

    task_id = submit(audio, two_keys.url, identify_speakers="true")
    result = wait_done(task_id, timeout=900, base_url=two_keys.url)["result"]
    names = _name_of_each_voice(case, result)
    assert names["michael"] == "Michael", result["speakers"]
    assert names["f4"] == "Fiona", result["speakers"]
    assert names["nyc_m5"].startswith("SPEAKER_"), result["speakers"]
    stranger = next(entry for entry in result["speakers"] if entry["speaker"] == names["nyc_m5"])
    assert stranger["match"] in ("Michael", "Fiona")  # its best match, below the threshold
    assert stranger["score"] < next(e["score"] for e in result["speakers"] if e["speaker"] == "Michael")

    # Another key sees none of it: not the voices, not the task, and cannot use or delete them.
    assert httpx.get(f"{two_keys.url}/api/v1/speakers", headers=OTHER).json() == {"speakers": []}
    assert httpx.delete(f"{two_keys.url}/api/v1/speakers/{michael['id']}", headers=OTHER).status_code == 404
    foreign = httpx.post(
        f"{two_keys.url}/api/v1/speakers",
        headers=OTHER,
        data={"name": "Nick", "task_id": task_id, "speaker": "Michael"},
    )
    assert foreign.status_code == 404
    with audio.open("rb") as file:
        refused = httpx.post(
            f"{two_keys.url}/api/v1/transcribe/upload", headers=OTHER, files={"file": file},
            data={"identify_speakers": "Michael"},
        )  # fmt: skip
    assert refused.status_code == 422, refused.text

    # Rename the stranger on the server: the SRT export shows the name.
    renamed = httpx.patch(
        f"{two_keys.url}/api/v1/transcribe/tasks/{task_id}/speakers", headers=AUTH, json={names["nyc_m5"]: "Nick"}
    )
    assert renamed.status_code == 200, renamed.text
    srt = httpx.get(f"{two_keys.url}/api/v1/transcribe/result/{task_id}?format=srt", headers=AUTH).text
    assert "[Nick]" in srt
    assert "[Michael]" in srt
    assert f"[{names['nyc_m5']}]" not in srt

    # Remember the stranger's voice from the task, forget Fiona's: the next recording's transcript follows.
    nick = httpx.post(
        f"{two_keys.url}/api/v1/speakers", headers=AUTH, data={"name": "Nick", "task_id": task_id, "speaker": "Nick"}
    )
    assert nick.status_code == 201, nick.text
    assert httpx.delete(f"{two_keys.url}/api/v1/speakers/{fiona['id']}", headers=AUTH).status_code == 200
    listed = httpx.get(f"{two_keys.url}/api/v1/speakers", headers=AUTH).json()["speakers"]
    assert sorted(voice["name"] for voice in listed) == ["Michael", "Nick"]

    later_case, later_audio = later_dialogue
    again = wait_done(submit(later_audio, two_keys.url, identify_speakers="true"), timeout=900, base_url=two_keys.url)[
        "result"
    ]
    # Each enrolled voice is named on its own words there, and on nobody else's. The diarizer may cut
    # one voice into two pieces on a short clip (it did: one of Michael's two turns), and a piece
    # too short to score over the threshold keeps its label: how well voices are told apart is the
    # diarization benches' subject, not this test's.
    said = _names_on_each_voice(later_case, again)
    assert said["michael"]["Michael"] > 0, (said, again["speakers"])
    assert said["nyc_m5"]["Nick"] > 0, (said, again["speakers"])
    assert said["nyc_m5"]["Michael"] == said["f4"]["Michael"] == said["michael"]["Nick"] == said["f4"]["Nick"] == 0, (
        said
    )
    assert all(name.startswith("SPEAKER_") for name in said["f4"]), said  # Fiona's voice was forgotten


def test_a_too_short_sample_is_refused(two_keys: Server, tmp_path: Path) -> None:
    short = speak("Hi.", "michael", tmp_path / "hi.wav")
    write_wav(tmp_path / "hi-16k.wav", short)
    with (tmp_path / "hi-16k.wav").open("rb") as audio:
        response = httpx.post(
            f"{two_keys.url}/api/v1/speakers", headers=AUTH, data={"name": "Hi"}, files={"file": audio}, timeout=120
        )
    assert response.status_code == 422
    assert "a voice needs at least 3 s" in response.json()["detail"]
