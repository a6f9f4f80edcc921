"""A corpus of bad and hostile uploads, generated here: each gets a clear 4xx, or a task that
ends failed with a clear error (or completes, where the file is odd but valid). Never a 5xx,
never a hang, no file left behind, and the service still answers afterwards."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.media import MediaError, decode, probe
from app.tasks.worker_process import public_message
from tests.api.conftest import AUTH, wait_for_status
from tests.conftest import ffmpeg


@dataclass
class Case:
    name: str
    filename: str
    content: bytes
    form: dict[str, str] = field(default_factory=dict)
    expect: set[int] | str = field(default_factory=set)
    """HTTP codes allowed, or a task outcome: "completed" or "failed"."""
    says: str = ""
    """Words the refusal's detail or the failed task's error must contain."""


def _lavfi(target: Path, source: str, *args: str) -> bytes:
    ffmpeg("-f", "lavfi", "-i", source, *args, str(target))
    return target.read_bytes()


def _wav_header_claiming(seconds: int, actual_samples: int) -> bytes:
    rate, size = 16_000, 2 * 16_000 * seconds
    header = b"RIFF" + struct.pack("<I", 36 + size) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, 2 * rate, 2, 16)
    return header + b"data" + struct.pack("<I", size) + b"\0\0" * actual_samples


def _mp3_with_huge_id3(mp3: bytes, size: int) -> bytes:
    syncsafe = bytes([(size >> 21) & 127, (size >> 14) & 127, (size >> 7) & 127, size & 127])
    return b"ID3\x04\x00\x00" + syncsafe + b"\0" * size + mp3


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Case]:
    work = tmp_path_factory.mktemp("corpus")
    mp3 = _lavfi(work / "tone.mp3", "sine=frequency=440:duration=2", "-c:a", "libmp3lame")
    ten_minutes = work / "ten.opus"
    _lavfi(ten_minutes, "anullsrc=r=8000:cl=mono", "-t", "600", "-c:a", "libopus", "-b:a", "6k")
    # Six hours of silence, 8 MB on disk: the ten-minute file looped 36 times, copied, not encoded.
    six_hours = work / "six-hours.opus"
    ffmpeg("-stream_loop", "35", "-i", str(ten_minutes), "-c", "copy", str(six_hours))
    one = work / "one.wav"
    _lavfi(one, "anullsrc=r=8000:cl=mono", "-t", "0.2")
    streams = work / "streams.mka"
    ffmpeg("-i", str(one), *["-map", "0:a"] * 900, "-c", "copy", str(streams))
    return [
        Case("empty file", "a.wav", b"", expect={422}, says="empty"),
        Case("truncated mp3", "cut.mp3", mp3[: len(mp3) // 3], expect="completed"),
        Case("random bytes named .wav", "noise.wav", os.urandom(64 * 1024), expect={415}, says="Supported formats"),
        Case("text named .mp3", "notes.mp3", b"Dear diary,\n" * 500, expect={415}, says="Supported formats"),
        Case(
            "video without audio",
            "clip.mp4",
            _lavfi(work / "v.mp4", "testsrc=duration=1:size=64x64:rate=5", "-c:v", "mpeg4"),
            expect={422},
            says="no audio track",
        ),
        Case(
            "silence only", "quiet.flac",
            _lavfi(work / "q.flac", "anullsrc=r=16000:cl=mono", "-t", "5"),
            expect="completed",
        ),
        Case(
            "0.1 s clip", "blip.ogg",
            _lavfi(work / "b.ogg", "sine=duration=0.1", "-c:a", "libvorbis"),
            expect="completed",
        ),
        Case("6-hour silent opus", "long.opus", six_hours.read_bytes(), expect={413}, says="MAX_AUDIO_SECONDS"),
        # ffprobe measures WAV by its real size; the lie changes nothing but must not hang or crash.
        Case("WAV header claiming 10 h", "liar.wav", _wav_header_claiming(36_000, 8000), expect="completed"),
        Case("zero-length audio", "none.wav", _wav_header_claiming(0, 0), expect="failed", says="no audio samples"),
        Case("900 streams", "many.mka", streams.read_bytes(), expect={422}, says="at most 32"),
        Case("4 MB ID3 header", "tagged.mp3", _mp3_with_huge_id3(mp3, 4 * 1024 * 1024), expect="completed"),
        Case("name with ../ and NUL", "../../etc/passwd\x00.mp3", mp3, expect="completed"),
        Case("min > max speakers", "a.mp3", mp3, {"min_speakers": "4", "max_speakers": "2"}, {422}, "min_speakers"),
        Case("unknown language", "a.mp3", mp3, {"language": "xx-martian"}, {422}, "not a language Whisper knows"),
        Case("huge form field", "a.mp3", mp3, {"language": "e" * (2 * 1024 * 1024)}, {413}, "longer than the 64 KB"),
    ]  # fmt: skip


def test_every_bad_input_gets_a_clear_answer_and_leaves_nothing(
    make_client: Callable[..., TestClient], corpus: list[Case]
) -> None:
    client = make_client(max_concurrent_tasks=2)
    settings: Settings = client.app.state.settings  # type: ignore[attr-defined]
    accepted: list[tuple[Case, str]] = []
    for case in corpus:
        response = client.post(
            "/api/v1/transcribe/upload",
            headers=AUTH,
            files={"file": (case.filename, case.content)},
            data=case.form,
        )
        assert response.status_code < 500, (case.name, response.text)
        if isinstance(case.expect, set):
            assert response.status_code in case.expect, (case.name, response.status_code, response.text)
            assert response.headers["content-type"] == "application/problem+json", case.name
            detail = response.json()["detail"]
            assert case.says in detail, (case.name, detail)
            assert "Traceback" not in detail, (case.name, detail)
            assert str(settings.upload_dir) not in detail, (case.name, detail)
        else:
            assert response.status_code == 202, (case.name, response.text)
            accepted.append((case, response.json()["task_id"]))

    for case, task_id in accepted:
        done = wait_for_status(client, task_id, {"completed", "failed"}, timeout=60)
        assert done["status"] == case.expect, (case.name, done)
        if case.expect == "failed":
            assert case.says in done["error"], (case.name, done["error"])
            assert str(settings.upload_dir) not in done["error"]

    assert list(settings.upload_dir.iterdir()) == [], "every upload is deleted once refused or finished"
    assert not (settings.upload_dir.parent / "etc").exists()
    assert client.get("/health", headers=AUTH).json()["status"] == "ok"


@pytest.mark.parametrize(
    ("kind", "playlist"),
    [
        ("concat", "ffconcat version 1.0\nfile decoy\n"),
        ("HLS", "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\ndecoy\n#EXT-X-ENDLIST\n"),
    ],
)
def test_a_playlist_cannot_make_ffmpeg_open_other_files(
    client: TestClient, settings: Settings, kind: str, playlist: str
) -> None:
    """A playlist naming a file next to the uploads (another user's upload, say) is refused
    without that file being opened: it is a FIFO here, so opening it would block the probe."""
    decoy = settings.upload_dir / "decoy"
    os.mkfifo(decoy)
    try:
        started = time.monotonic()
        response = client.post(
            "/api/v1/transcribe/upload", headers=AUTH, files={"file": ("list.m3u8", playlist.encode())}
        )
        assert response.status_code == 415, response.text
        assert "Supported formats" in response.json()["detail"]
        assert time.monotonic() - started < 5, "the probe must not wait on the named file"
    finally:
        decoy.unlink()


def test_decoding_never_follows_a_playlist(tmp_path: Path, short_speech: Path) -> None:
    (tmp_path / "other.wav").write_bytes(short_speech.read_bytes())
    playlist = tmp_path / "list.txt"
    playlist.write_text("ffconcat version 1.0\nfile other.wav\n")
    with pytest.raises(MediaError, match="could not be decoded"):
        decode(playlist, timeout=10, max_seconds=60)


def test_non_utf8_form_fields_are_a_clear_422(client: TestClient, short_speech: Path) -> None:
    body = (
        b'--xyz\r\nContent-Disposition: form-data; name="language"\r\n\r\n\xff\xfe\xc3\x28\r\n'
        b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        + short_speech.read_bytes()
        + b"\r\n--xyz--\r\n"
    )
    response = client.post(
        "/api/v1/transcribe/upload",
        headers={**AUTH, "Content-Type": "multipart/form-data; boundary=xyz"},
        content=body,
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert "is not a language Whisper knows" in response.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [("GET", "/no/such/path", 404), ("PUT", "/api/v1/transcribe/upload", 405), ("POST", "/health", 405)],
)
def test_routing_errors_are_problem_documents(client: TestClient, method: str, path: str, code: int) -> None:
    response = client.request(method, path, headers=AUTH)
    assert response.status_code == code
    assert response.headers["content-type"] == "application/problem+json"
    assert set(response.json()) == {"type", "title", "status", "detail"}


def test_a_probe_that_runs_too_long_is_stopped_with_a_clear_error(short_speech: Path) -> None:
    """The timeout path itself: ffprobe is killed, and the person is told why."""
    # In a thread of its own: a browser test earlier in the session may leave a loop running in this one.
    with (
        concurrent.futures.ThreadPoolExecutor(1) as thread,
        pytest.raises(MediaError, match="took too long to inspect"),
    ):
        thread.submit(asyncio.run, probe(short_speech, timeout=0.001)).result()


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("No such file: '/root/.cache/whisperx-api/base/model.bin'", "No such file: '<server path>'"),
        ("Cannot load /opt/models/x; check ALIGN_MODEL", "Cannot load <server path>; check ALIGN_MODEL"),
        ("accept the terms at https://hf.co/pyannote/seg", "accept the terms at https://hf.co/pyannote/seg"),
        ("pyannote/speaker-diarization-3.1 failed", "pyannote/speaker-diarization-3.1 failed"),
    ],
)
def test_failure_messages_shown_to_users_carry_no_server_paths(raw: str, shown: str) -> None:
    assert public_message(raw) == shown
