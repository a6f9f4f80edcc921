"""Audio files: check what an upload really is with ffprobe, and decode it with ffmpeg."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000

SUPPORTED_EXTENSIONS = ("mp3", "wav", "m4a", "flac", "ogg", "webm", "mp4", "mpeg", "mpga", "oga", "opus")
"""The formats the API promises, as users know them (file extensions)."""

# ffprobe's demuxer names for those formats; the upload's content decides, never its name.
_ACCEPTED_DEMUXERS = frozenset({"mp3", "wav", "mov", "mp4", "m4a", "flac", "ogg", "matroska", "webm", "mpeg"})

# Local files only: a crafted playlist or container must not make ffmpeg open URLs.
_SAFE_INPUT = ("-protocol_whitelist", "file,pipe")

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


async def probe(path: Path, timeout: float) -> MediaInfo:
    """Identify a file by its content; raise a MediaError a user can act on."""
    timeout = min(timeout, PROBE_TIMEOUT_SECONDS)
    command = [
        "ffprobe", "-v", "error", *_SAFE_INPUT,
        "-show_entries", "format=format_name,duration:stream=codec_type", "-of", "json", str(path),
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        stdout, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise MediaError("The file took too long to inspect; it may be damaged.") from None
    if process.returncode != 0:
        raise UnsupportedMediaError(unsupported_message("not a recognisable audio or video file"))
    report = json.loads(stdout or b"{}")
    format_name = report.get("format", {}).get("format_name", "")
    if not _ACCEPTED_DEMUXERS.intersection(format_name.split(",")):
        raise UnsupportedMediaError(unsupported_message(format_name or "unknown"))
    streams = report.get("streams", [])
    if len(streams) > MAX_STREAMS:
        raise MediaError(f"The file has {len(streams)} streams; at most {MAX_STREAMS} are accepted. Export its audio.")
    if not any(stream.get("codec_type") == "audio" for stream in streams):
        raise MediaError("The file has no audio track to transcribe.")
    duration = _seconds(report.get("format", {}).get("duration"))
    if duration is not None and duration <= 0:
        raise MediaError("The audio track is empty (0 s long); check that the recording worked.")
    return MediaInfo(format_name=format_name, duration=duration)


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
    samples = np.frombuffer(completed.stdout, np.int16).astype(np.float32) / 32768.0
    if samples.size == 0:
        raise MediaError("The file contains no audio samples; check that the recording is not empty.")
    return samples
