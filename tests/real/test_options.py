"""Upload options and audio_url on the real server and the embedded `base` model, with generated speech."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ffmpeg, free_port, speak
from tests.documented import code_blocks
from tests.real.conftest import AUTH, BASE_URL, KNOWN_TEXT, PORT, Server, normalise, submit, wait_done, word_error_rate

GERMAN = "Der Hund spielt im Garten. Das Wasser ist kalt. Ich trinke gern Kaffee am Morgen."
# Words of the German clip in English; measured translation by base: "The wind blows in the garden.
# The water is cold. I'll go to the cafe in the morning."
ENGLISH_WORDS = {"dog", "plays", "garden", "water", "cold", "drink", "coffee", "morning"}
GERMAN_WORDS = {"der", "das", "ist", "im", "ich", "und", "hund", "wasser", "kalt", "morgen"}
# A name whose spelling base cannot guess: without a prompt it measured "Navy or Shepansky".
NAME_SENTENCE = "Please send the report to Xavier Szczepanski before noon."


def _words(result: dict[str, Any]) -> set[str]:
    return set(normalise(" ".join(segment["text"] for segment in result["segments"])).split())


@pytest.fixture(scope="module")
def german_speech(media_dir: Path) -> Path:
    return speak(GERMAN, media_dir / "german.wav", voice="de", speed=130)


def test_translate_turns_german_speech_into_english(server: Server, german_speech: Path) -> None:
    heard = wait_done(submit(german_speech, language="de", enable_diarization="false"))
    assert heard["status"] == "completed", heard["error"]
    assert len(_words(heard["result"]) & GERMAN_WORDS) >= 4, heard["result"]["segments"]

    done = wait_done(submit(german_speech, task="translate", enable_diarization="false"))
    assert done["status"] == "completed", done["error"]
    result = done["result"]
    assert (result["task"], result["language"]) == ("translate", "de")
    words = _words(result)
    assert len(words & ENGLISH_WORDS) >= 3, words
    assert not words & GERMAN_WORDS, words
    assert all(word["timed"] for segment in result["segments"] for word in segment["words"])


def test_an_initial_prompt_teaches_the_spelling_of_a_name(server: Server, media_dir: Path) -> None:
    clip = speak(NAME_SENTENCE, media_dir / "name.wav")
    plain = wait_done(submit(clip, language="en", enable_diarization="false"))
    assert plain["status"] == "completed", plain["error"]
    assert "szczepanski" not in _words(plain["result"])

    prompt = "Meeting notes. Attendees: Xavier Szczepanski."
    taught = wait_done(submit(clip, language="en", enable_diarization="false", initial_prompt=prompt))
    assert taught["status"] == "completed", taught["error"]
    assert {"xavier", "szczepanski"} <= _words(taught["result"])


def test_numbers_are_kept_as_written_or_spelled_out_on_request(server: Server, media_dir: Path) -> None:
    clip = speak("The meeting is at 9:30 and the price rose by 12% today.", media_dir / "numbers.wav")
    written = wait_done(submit(clip, language="en", enable_diarization="false"))["result"]
    text = " ".join(segment["text"] for segment in written["segments"])
    assert "12%" in text, text
    words = [word for segment in written["segments"] for word in segment["words"]]
    assert all(word["timed"] and word["score"] is not None for word in words), words

    spelled = wait_done(submit(clip, language="en", enable_diarization="false", suppress_numerals="true"))
    text = " ".join(segment["text"] for segment in spelled["result"]["segments"]).lower()
    assert not any(character.isdigit() or character == "%" for character in text), text
    assert "twelve" in text, text


@pytest.fixture
def file_server(known_speech: Path) -> Iterator[str]:
    """A loopback HTTP server for the folder holding the known clip."""
    port = free_port()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), partial(Quiet, directory=str(known_speech.parent)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    thread.join(5)


def test_audio_url_is_downloaded_and_transcribed(server: Server, known_speech: Path, file_server: str) -> None:
    response = httpx.post(
        f"{BASE_URL}/api/v1/transcribe/upload",
        headers=AUTH,
        data={"audio_url": f"{file_server}/{known_speech.name}", "enable_diarization": "false"},
    )
    assert response.status_code == 202, response.text
    done = wait_done(response.json()["task_id"])
    assert done["status"] == "completed", done["error"]
    text = " ".join(segment["text"] for segment in done["result"]["segments"])
    assert word_error_rate(KNOWN_TEXT, text) <= 0.10
    assert not list(server.upload_dir.glob(done["task_id"])), "the download is removed with its task's end"


def test_audio_url_returning_a_web_page_fails_clearly(server: Server, file_server: str) -> None:
    response = httpx.post(f"{BASE_URL}/api/v1/transcribe/upload", headers=AUTH, data={"audio_url": f"{file_server}/"})
    assert response.status_code == 202, response.text
    done = wait_done(response.json()["task_id"])
    assert done["status"] == "failed"
    assert "returned a web page (text/html), not audio" in done["error"]


def test_the_documented_options_example_runs_as_written(server: Server, media_dir: Path, tmp_path: Path) -> None:
    block = code_blocks("docs/options.md", "Transcription options", PORT)[0]
    ffmpeg("-i", str(speak(NAME_SENTENCE, media_dir / "interview.wav")), str(tmp_path / "interview.mp3"))
    command = re.sub(r"\\\n\s*", " ", block).strip()
    answer = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, check=True)
    done = wait_done(json.loads(answer.stdout)["task_id"])
    assert done["status"] == "completed", done["error"]
    result = done["result"]
    assert result["task"] == "translate"
    assert result["options"] == {
        "initial_prompt": "Interview with Xavier Szczepanski about Kubernetes.", "beam_size": 5, "vad_onset": 0.4,
        "vad_offset": 0.3,
    }  # fmt: skip
    assert "szczepanski" in _words(result)
