"""Audio files: check what an upload really is with ffprobe, and decode it with ffmpeg."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

SAMPLE_RATE = 16_000

SUPPORTED_EXTENSIONS = ("mp3", "wav", "m4a", "flac", "ogg", "webm", "mp4", "mpeg", "mpga", "oga", "opus")
"""The formats the API promises, as users know them (file extensions)."""

# ffmpeg's demuxers for those formats; the upload's content decides, never its name.
_ACCEPTED_DEMUXERS = ("mp3", "wav", "mov", "flac", "ogg", "matroska", "mpeg")

# How ffprobe and ffmpeg may read an upload: local files only, so a crafted container cannot make
# them open URLs, and only the accepted demuxers, so a playlist (concat, HLS, image sequences)
# cannot make them open other files, such as other users' uploads.
_SAFE_INPUT = ("-protocol_whitelist", "file,pipe", "-format_whitelist", ",".join(_ACCEPTED_DEMUXERS))

MAX_STREAMS = 32
"""More streams than any real recording has; a file with thousands is an attack on the decoder."""

PROBE_TIMEOUT_SECONDS = 30.0
"""Inspecting a file reads only its headers: seconds, even for hours of audio. The request waits on it."""


class MediaError(Exception):
    """The file cannot be used; the message says why, for the person who sent it."""


class UnsupportedMediaError(MediaError):
    """The file is not one of the supported formats."""


@dataclass(frozen=True)
class MediaInfo:
    format_name: str
    duration: float | None


def unsupported_message(found: str) -> str:
    return f"Unsupported file type ({found}). Supported formats: {', '.join(SUPPORTED_EXTENSIONS)}."


async def _ffprobe(entries: str, source: Path | BinaryIO, timeout: float) -> dict[str, Any] | None:
    """ffprobe's JSON report on a file path (accepted demuxers only) or a stream (any demuxer,
    reading nothing but that stream); None when ffprobe cannot read it."""
    stdin: int | BinaryIO = subprocess.DEVNULL
    if isinstance(source, Path):
        inputs = [*_SAFE_INPUT, "-i", str(source)]
    else:
        inputs, stdin = ["-protocol_whitelist", "pipe", "-i", "pipe:0"], source
    command = ["ffprobe", "-v", "error", "-show_entries", entries, "-of", "json", *inputs]
    process = await asyncio.create_subprocess_exec(
        *command, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        stdout, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise MediaError("The file took too long to inspect; it may be damaged.") from None
    if process.returncode != 0:
        return None
    report: dict[str, Any] = json.loads(stdout or b"{}")
    return report


async def probe(path: Path, timeout: float) -> MediaInfo:
    """Identify a file by its content; raise a MediaError a user can act on."""
    deadline = time.monotonic() + min(timeout, PROBE_TIMEOUT_SECONDS)
    report = await _ffprobe("format=format_name,duration:stream=codec_type", path, deadline - time.monotonic())
    if report is None:
        # Not an accepted format, or damaged. Name what it is, for the message, from its bytes alone.
        with path.open("rb") as stream:
            named = await _ffprobe("format=format_name", stream, max(deadline - time.monotonic(), 0.1))
        found = (named or {}).get("format", {}).get("format_name")
        if found is None:
            raise UnsupportedMediaError(unsupported_message("not a recognisable audio or video file"))
        if set(found.split(",")).intersection(_ACCEPTED_DEMUXERS):
            raise MediaError(f"The file looks like {found} but cannot be read; it may be damaged or cut short.")
        raise UnsupportedMediaError(unsupported_message(found))
    format_name = report.get("format", {}).get("format_name", "")
    streams = report.get("streams", [])
    if len(streams) > MAX_STREAMS:
        raise MediaError(f"The file has {len(streams)} streams; at most {MAX_STREAMS} are accepted. Export its audio.")
    if not any(stream.get("codec_type") == "audio" for stream in streams):
        raise MediaError("The file has no audio track to transcribe.")
    duration = _seconds(report.get("format", {}).get("duration"))
    if duration is not None and duration <= 0:
        raise MediaError("The audio track is empty (0 s long); check that the recording worked.")
    return MediaInfo(format_name=format_name, duration=duration)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds:.0f} s"


def too_large_message(limit_bytes: int) -> str:
    """Why a file is refused for its size (MAX_UPLOAD_MB): uploads and audio_url downloads alike."""
    return (
        f"The upload is larger than this server's limit of {limit_bytes / 1024 / 1024:g} MB (MAX_UPLOAD_MB); "
        "send a smaller or more compressed file, or split it."
    )


def too_long_message(info: MediaInfo, max_seconds: float) -> str | None:
    """Why the audio is refused for its length (MAX_AUDIO_SECONDS), or None when it is short enough."""
    if info.duration is None or info.duration <= max_seconds:
        return None
    return (
        f"The audio lasts {_hours(info.duration)}; this server accepts at most {_hours(max_seconds)} "
        f"(MAX_AUDIO_SECONDS={max_seconds:g}). Split the file into shorter parts."
    )


def _seconds(value: object) -> float | None:
    try:
        seconds = float(str(value))
    except ValueError:
        return None  # absent or "N/A": some containers (streamed WebM) do not record it
    return seconds if math.isfinite(seconds) else None


def decode(path: Path, timeout: float, max_seconds: float) -> np.ndarray:
    """Decode any supported file to 16 kHz mono float32 samples, as Whisper expects.

    At most `max_seconds` are decoded: a file whose header hid its length cannot fill memory.
    """
    command = [
        "ffmpeg", "-nostdin", "-v", "error", *_SAFE_INPUT, "-i", str(path),
        "-t", f"{max_seconds:g}", "-vn", "-sn", "-dn",
        "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "s16le", "-acodec", "pcm_s16le", "-",
    ]  # fmt: skip
    try:
        completed = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise MediaError(f"Decoding the audio took longer than {timeout:.0f} s; try a shorter file.") from None
    if completed.returncode != 0:
        reason = completed.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["unknown error"]
        detail = reason[0].replace(str(path), "input")[:200]
        raise MediaError(f"The audio could not be decoded ({detail}); the file may be damaged.")
    # One float32 copy of the samples, scaled in place: a 30-minute file is 115 MB, not twice that.
    samples = np.frombuffer(completed.stdout, np.int16).astype(np.float32)
    del completed
    samples /= 32768.0
    if samples.size == 0:
        raise MediaError("The file contains no audio samples; check that the recording is not empty.")
    return samples
