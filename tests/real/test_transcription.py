"""The real WhisperX pipeline through the HTTP API, on generated speech and a real recording."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.pipeline.diarizers import EMBEDDED_DIARIZER
from tests.conftest import Deadline, ffmpeg, free_port
from tests.real.conftest import (
    AUTH,
    KNOWN_TEXT,
    Server,
    get_status,
    serving,
    submit,
    transcript_text,
    wait_done,
    word_error_rate,
)

# Measured on the embedded base model: espeak speech comes out at 0-4 % WER.
MAX_WER_GENERATED = 0.10
# The pyannote sample is 8 kHz telephone speech with overlaps; base measured 15-20 %.
MAX_WER_TELEPHONE = 0.35
FORMATS = {
    "mp3": ["-c:a", "libmp3lame"],
    "wav": [],
    "m4a": ["-c:a", "aac"],
    "flac": [],
    "ogg": ["-c:a", "libvorbis"],
    "webm": ["-c:a", "libopus"],
    "mp4": ["-c:a", "aac"],
    "mpeg": ["-c:a", "mp2", "-f", "mpeg"],
    "mpga": ["-c:a", "libmp3lame", "-f", "mp3"],
    "oga": ["-c:a", "flac", "-f", "ogg"],
    "opus": ["-c:a", "libopus"],
}


def test_generated_speech_is_transcribed_with_timed_words(server: Server, known_speech: Path) -> None:
    done = wait_done(submit(known_speech))
    assert done["status"] == "completed", done["error"]
    result = httpx.get(f"{server.url}/api/v1/transcribe/result/{done['task_id']}", headers=AUTH).json()
    assert result["language"] == "en"
    assert result["model"] == "base"
    assert result["word_timing"] == "whisper-word-timestamps"
    assert word_error_rate(KNOWN_TEXT, transcript_text(result)) <= MAX_WER_GENERATED

    previous_start = -1.0
    words = [word for segment in result["segments"] for word in segment["words"]]
    assert len(words) >= len(KNOWN_TEXT.split()) - 3
    for segment in result["segments"]:
        for word in segment["words"]:
            assert word["start"] < word["end"], word
            assert segment["start"] - 0.05 <= word["start"], (word, segment)
            assert word["end"] <= segment["end"] + 0.05, (word, segment)
            assert word["start"] >= previous_start, "word times increase"
            previous_start = word["start"]
    # Words end no later than the audio does (about 15 s of speech).
    assert words[-1]["end"] <= 20


def test_without_hf_token_the_embedded_diarizer_labels_speakers(server: Server, known_speech: Path) -> None:
    done = wait_done(submit(known_speech, language="en", enable_diarization="true"))
    assert done["status"] == "completed"
    # Offline with no aligner cached, the message also says the words were timed by Whisper.
    assert done["message"].startswith("Transcription completed")
    assert "diarizer" not in done["message"], "no fallback note: the embedded diarizer is the one asked for"
    result = done["result"]
    assert result["diarizer"] == EMBEDDED_DIARIZER
    assert [speaker["speaker"] for speaker in result["speakers"]] == ["SPEAKER_00"]
    assert all(segment["speaker"] == "SPEAKER_00" for segment in result["segments"])
    assert all(word["speaker"] == "SPEAKER_00" for segment in result["segments"] for word in segment["words"])

    plain = wait_done(submit(known_speech, language="en", enable_diarization="false"))
    assert plain["message"].startswith("Transcription completed")
    assert plain["result"]["diarizer"] is None
    assert plain["result"]["speakers"] is None
    assert all(segment["speaker"] is None for segment in plain["result"]["segments"])


def test_real_recording_from_the_pyannote_wheel(server: Server, pyannote_sample: tuple[Path, str]) -> None:
    audio, reference = pyannote_sample
    done = wait_done(submit(audio))
    assert done["status"] == "completed", done["error"]
    assert done["result"]["language"] == "en"
    assert word_error_rate(reference, transcript_text(done["result"])) <= MAX_WER_TELEPHONE


def test_every_supported_format_transcribes(server: Server, known_speech: Path, tmp_path: Path) -> None:
    clip = tmp_path / "source.wav"
    ffmpeg("-i", str(known_speech), "-t", "6", str(clip))  # "The weather is warm and sunny today. My brother..."
    task_ids = {}
    for extension, codec in FORMATS.items():
        converted = tmp_path / f"clip.{extension}"
        ffmpeg("-i", str(clip), *codec, str(converted))
        task_ids[extension] = submit(converted, language="en", enable_diarization="false")
    for extension, task_id in task_ids.items():
        done = wait_done(task_id)
        assert done["status"] == "completed", (extension, done["error"])
        text = transcript_text(done["result"]).lower()
        # Not "weather": lossy encoders pad the first frames, and "The weather" can come out "But wherever".
        assert "warm" in text, (extension, text)
        assert "sunny" in text, (extension, text)
    assert list(server.upload_dir.iterdir()) == []


def test_progress_rises_through_every_stage(server: Server, long_speech: Path) -> None:
    task_id = submit(long_speech, language="en", enable_diarization="false")
    seen = [get_status(task_id)]
    deadline = Deadline(300, f"task {task_id} to finish")
    while seen[-1]["status"] not in ("completed", "failed"):
        deadline.check(seen[-1])
        seen.append(get_status(task_id))
    assert seen[-1]["status"] == "completed"
    progress = [doc["progress"] for doc in seen]
    assert progress == sorted(progress)
    transcribing = {doc["progress"] for doc in seen if doc["message"] == "Transcribing speech"}
    assert len(transcribing) >= 3, f"transcription progress should advance in steps, saw {sorted(transcribing)}"
    messages = list(dict.fromkeys(doc["message"] for doc in seen if doc["status"] == "processing"))
    # Stages follow each other in order; with Whisper's own word times, timing words takes
    # no time of its own, so a poller may not catch it.
    order = ["Starting", "Decoding audio", "Transcribing speech", "Timing words"]
    assert "Transcribing speech" in messages
    assert [order.index(message) for message in messages] == sorted(order.index(message) for message in messages)


@pytest.fixture(scope="module")
def one_worker_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The service with a single worker and a standby: a queued task can start only once the running one
    has stopped."""
    with serving(
        tmp_path_factory.mktemp("one-worker"), free_port(), MAX_CONCURRENT_TASKS="1", STANDBY_WORKERS="1"
    ) as running:
        yield running


def _worker_pids(server: Server) -> set[int]:
    """The service's worker processes: its children started by multiprocessing's spawn."""
    pids = set()
    for child in Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split():
        with contextlib.suppress(FileNotFoundError):  # it ended meanwhile
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                pids.add(int(child))
    return pids


@pytest.fixture(scope="module")
def twenty_minutes(known_speech: Path, media_dir: Path) -> Path:
    """The known clip 80 times over."""
    target = media_dir / "twenty-minutes.wav"
    ffmpeg("-stream_loop", "79", "-i", str(known_speech), "-c", "copy", str(target))
    return target


def test_deleting_a_running_task_stops_it(one_worker_server: Server, twenty_minutes: Path, known_speech: Path) -> None:
    url = one_worker_server.url
    # A transcription first, so the worker holds what one leaves (tqdm's lock among it) when it is killed.
    warm = submit(known_speech, url, language="en", enable_diarization="false")
    assert wait_done(warm, timeout=300, base_url=url)["status"] == "completed"
    deadline = Deadline(120, "the standby worker to start")
    while len(workers_before := _worker_pids(one_worker_server)) < 2:
        deadline.check(workers_before)
        time.sleep(0.2)
    # Left alone, this would hold the only worker for a quarter of an hour or more: 5 minutes of speech
    # took 30 s with a beam of 2, and each step of a beam of 20 decodes ten times the hypotheses.
    doomed = submit(twenty_minutes, url, language="en", beam_size="20")
    deadline = Deadline(300, f"task {doomed} to start transcribing")
    while (doc := get_status(doomed, url))["message"] != "Transcribing speech":
        deadline.check(doc)
        time.sleep(0.1)
    queued = submit(known_speech, url, language="en", enable_diarization="false")
    assert get_status(queued, url)["status"] == "pending", "the only worker is busy"

    assert httpx.delete(f"{url}/api/v1/transcribe/task/{doomed}", headers=AUTH).status_code == 200
    assert httpx.get(f"{url}/api/v1/transcribe/status/{doomed}", headers=AUTH).status_code == 404
    assert not (one_worker_server.upload_dir / doomed).exists()
    # The queued task runs in the slot the deleted one held, long before that one could have finished.
    after = wait_done(queued, timeout=300, base_url=url)
    assert after["status"] == "completed", after["error"]
    assert word_error_rate(KNOWN_TEXT, transcript_text(after["result"])) <= MAX_WER_GENERATED
    health = httpx.get(f"{url}/health", headers=AUTH).json()
    assert (health["model_loaded"], health["queue"]) == (True, {"pending": 0, "processing": 0})
    workers_after = _worker_pids(one_worker_server)
    killed = workers_before - workers_after
    assert len(killed) == 1, "a transcription batch cannot stop within the grace: its worker is killed"
    assert workers_before & workers_after, "the standby took the slot and ran the queued task"
    # Nothing of the killed worker is left: its multiprocessing semaphores carry its pid in their names.
    assert not [path for pid in killed for path in Path("/dev/shm").glob(f"sem.*-{pid}-*")]
