"""`whisperx-api live FILE|-`: live transcription of a file or standard input on a running service.

    whisperx-api live talk.mp3
    ffmpeg -i radio-stream -f s16le -ar 16000 -ac 1 - | whisperx-api live -

A file is decoded by ffmpeg and sent at real-time pace, as if it were being spoken; standard input
is raw 16-bit mono PCM (16 kHz unless --rate says otherwise) and is sent as it comes. The audio goes
to /v1/realtime over OpenAI's Realtime protocol; each utterance's final text is printed with its
speaker as it comes (`[SPEAKER_00] text`), partial text too with --partials (on stderr). At the end
of the input the last utterance is committed and its text awaited. The key comes from
WHISPERX_API_KEY or --api-key, and is sent as a header, never in the URL.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import IO, Any

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

RATE = 24000
CHUNK_SECONDS = 0.1
TRAILING_SILENCE_SECONDS = 1.0
"""Sent after the input ends, so server VAD hears the last utterance end."""


def _decoder(source: str, rate: int) -> subprocess.Popen[bytes]:
    """ffmpeg turning the file (or raw PCM on standard input) into 24 kHz mono 16-bit PCM on its stdout."""
    raw = ["-f", "s16le", "-ar", str(rate), "-ac", "1", "-i", "pipe:0"]
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", *(raw if source == "-" else ["-nostdin", "-i", source])]
    command += ["-f", "s16le", "-ar", str(RATE), "-ac", "1", "pipe:1"]
    return subprocess.Popen(command, stdin=sys.stdin if source == "-" else subprocess.DEVNULL, stdout=subprocess.PIPE)


def _chunks(stream: IO[bytes], paced: bool) -> Iterator[bytes]:
    size = round(CHUNK_SECONDS * RATE) * 2
    started, sent = time.monotonic(), 0.0
    while chunk := stream.read(size):
        if paced:  # a file is sent as fast as it would be spoken
            time.sleep(max(0.0, started + sent - time.monotonic()))
        yield chunk
        sent += len(chunk) / 2 / RATE
    yield bytes(round(TRAILING_SILENCE_SECONDS * RATE) * 2)


def _append(connection: ClientConnection, pcm: bytes) -> None:
    connection.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}))


class _Transcript:
    """The server's events as printed lines."""

    def __init__(self, partials: bool) -> None:
        self._partials = partials
        self.error: str | None = None
        self.finished = False

    def take(self, event: dict[str, Any]) -> None:
        match event.get("type"):
            case "input_audio_buffer.cleared":  # the clear sent after the input's end: all text is in
                self.finished = True
            case "conversation.item.input_audio_transcription.delta" if self._partials:
                print(event.get("delta", ""), end="", file=sys.stderr, flush=True)
            case "conversation.item.input_audio_transcription.completed":
                if self._partials:
                    print(file=sys.stderr)
                speaker = event.get("speaker")
                print(f"[{speaker}] {event['transcript']}" if speaker else event["transcript"], flush=True)
            case "error" if event["error"].get("code") != "input_audio_buffer_commit_empty":
                self.error = str(event["error"].get("message"))


def _send_all(connection: ClientConnection, source: str, rate: int) -> None:
    decoder = _decoder(source, rate)
    assert decoder.stdout is not None  # noqa: S101 - stdout=PIPE
    try:
        for chunk in _chunks(decoder.stdout, paced=source != "-"):
            _append(connection, chunk)
        # The last utterance, if VAD has not ended it (an empty buffer is answered with a harmless error);
        # the session takes events in order, so the clear's answer comes after every utterance's text.
        connection.send(json.dumps({"type": "input_audio_buffer.commit"}))
        connection.send(json.dumps({"type": "input_audio_buffer.clear"}))
    except ConnectionClosed:
        pass
    finally:
        decoder.kill()
        decoder.wait()


def run(url: str, key: str, source: str, rate: int, language: str | None, partials: bool) -> int:
    address = url.replace("http://", "ws://", 1).replace("https://", "wss://", 1).rstrip("/")
    transcript = _Transcript(partials)
    try:
        connection = connect(
            f"{address}/v1/realtime?intent=transcription", additional_headers={"Authorization": f"Bearer {key}"}
        )
    except InvalidStatus as refused:
        body = refused.response.body or b""
        try:
            detail = json.loads(body)["detail"]
        except (ValueError, KeyError, TypeError):
            detail = f"HTTP {refused.response.status_code}"
        print(f"whisperx-api live: refused: {detail}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"whisperx-api live: cannot reach {url}: {error}", file=sys.stderr)
        return 1
    with connection:
        update = {"type": "transcription", "audio": {"input": {"transcription": {"language": language}}}}
        connection.send(json.dumps({"type": "session.update", "session": update}))
        threading.Thread(target=_send_all, args=(connection, source, rate), daemon=True).start()
        try:
            while not transcript.finished and transcript.error is None:
                transcript.take(json.loads(connection.recv()))
        except ConnectionClosed:
            pass
    if transcript.error is not None:
        print(f"whisperx-api live: {transcript.error}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="whisperx-api live", description="Transcribe a file or standard input live on a WhisperX API server."
    )
    parser.add_argument("source", metavar="FILE|-", help="an audio or video file, or - for raw PCM on standard input")
    parser.add_argument(
        "--url", default=os.environ.get("WHISPERX_API_URL", "http://localhost:8000"),
        help="the server (default: $WHISPERX_API_URL or http://localhost:8000)",
    )  # fmt: skip
    parser.add_argument("--api-key", help="an API key (default: $WHISPERX_API_KEY)")
    parser.add_argument("--rate", type=int, default=16000, help="sample rate of raw PCM on standard input (16000)")
    parser.add_argument("--language", help="language code such as en (default: the live model's)")
    parser.add_argument("--partials", action="store_true", help="also show partial text, on stderr")
    args = parser.parse_args(argv)
    key = args.api_key or os.environ.get("WHISPERX_API_KEY")
    if not key:
        parser.error("no API key: set WHISPERX_API_KEY (or pass --api-key)")
    if args.source != "-" and not os.path.isfile(args.source):
        parser.error(f"{args.source} is not a file")
    return run(args.url, key, args.source, args.rate, args.language, args.partials)
