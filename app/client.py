"""Command-line client: transcribe files on a running service, a progress bar per file.

    whisperx-api --format srt --format txt talk.mp3 interview.wav
    python -m app.client ...          (the same, without installing the project)

Each file is uploaded, followed over Server-Sent Events (or by polling, with --poll), and its
result is written next to it (talk.srt, talk.txt); the task is then deleted from the server.
Inputs that share a stem (talk.mp3, talk.wav) keep their whole name: talk.mp3.srt, talk.wav.srt.
A result's warnings (the transcript may be incomplete, such as a second language left out) and
notes (what ran other than configured) are printed under its file's line; they do not change the
exit status, which is 0 when every file was transcribed, 1 otherwise. The key comes from
WHISPERX_API_KEY (preferred: command lines are visible to other users) or --api-key.

Only light packages are imported here (httpx, httpx-sse, tqdm, and `app.media` for the server's
own wording of its upload limit, which brings numpy): no torch, no whisperx.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import SSEError, aconnect_sse
from tqdm import tqdm

from app.media import too_large_message

FORMATS = ("json", "srt", "vtt", "txt", "tsv")
TERMINAL = ("completed", "failed", "deleted")
POLL_SECONDS = 1.0


class ClientError(Exception):
    """A file could not be transcribed; the message says why."""


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json()["detail"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"


def _check(response: httpx.Response) -> httpx.Response:
    if response.is_error:
        raise ClientError(_detail(response))
    return response


class _Bar(tqdm):  # type: ignore[type-arg]
    """A progress bar with the task's own words after it (tqdm's postfix would start with a comma)."""

    status = ""

    @property
    def format_dict(self) -> dict[str, Any]:
        return {**super().format_dict, "status": self.status}


def _show(bar: _Bar, state: dict[str, Any]) -> None:
    bar.n = state.get("progress", 0.0)
    eta = state.get("eta_seconds")
    bar.status = state["message"] + (f", ~{eta:.0f} s left" if eta is not None else "")
    bar.refresh()


async def _follow_events(client: httpx.AsyncClient, task_id: str, bar: _Bar) -> dict[str, Any]:
    async with aconnect_sse(client, "GET", f"/api/v1/transcribe/events/{task_id}", timeout=None) as source:
        if source.response.is_error:
            await source.response.aread()
            raise ClientError(_detail(source.response))
        async for event in source.aiter_sse():
            state: dict[str, Any] = json.loads(event.data)
            _show(bar, state)
            if event.event in TERMINAL:
                return state
    raise ClientError("the event stream ended before the task did")


async def _poll(client: httpx.AsyncClient, task_id: str, bar: _Bar) -> dict[str, Any]:
    while True:
        state: dict[str, Any] = _check(await client.get(f"/api/v1/transcribe/status/{task_id}")).json()
        _show(bar, state)
        if state["status"] in TERMINAL:
            return state
        await asyncio.sleep(POLL_SECONDS)


async def _upload(client: httpx.AsyncClient, path: Path, form: dict[str, str], limit_bytes: int | None) -> str:
    """The new task's id. A file over the server's limit is not sent: the server would refuse it
    before reading it and close the connection, and the client would see only the broken connection."""
    if limit_bytes is not None and path.stat().st_size > limit_bytes:
        raise ClientError(too_large_message(limit_bytes))
    try:
        with path.open("rb") as audio:
            response = await client.post("/api/v1/transcribe/upload", files={"file": (path.name, audio)}, data=form)
    except httpx.TransportError:
        # Refused before the body was read (429 this key's limit, 503 queue full), the answer lost
        # with the connection: the same request without the file gets the same refusal, in words.
        probe = await client.post("/api/v1/transcribe/upload", data=form)
        if probe.status_code in (429, 503):
            raise ClientError(_detail(probe)) from None
        raise
    task_id: str = _check(response).json()["task_id"]
    return task_id


@dataclass
class Transcribed:
    """What one file's transcription left: the files written, and what the result warns of or notes."""

    written: list[Path]
    warnings: list[str]
    notes: list[str]


async def _transcribe(
    client: httpx.AsyncClient, path: Path, base: Path, args: argparse.Namespace, bar: _Bar, limit_bytes: int | None
) -> Transcribed:
    form = {"enable_diarization": str(not args.no_diarization).lower()}
    for name in ("language", "min_speakers", "max_speakers", "prompt"):
        if (value := getattr(args, name)) is not None:
            form[name] = str(value)
    task_id = await _upload(client, path, form, limit_bytes)
    try:
        try:
            final = await (_poll if args.poll else _follow_events)(client, task_id, bar)
        except SSEError:  # a proxy that does not pass event streams through
            final = await _poll(client, task_id, bar)
        if final["status"] != "completed":
            raise ClientError(final.get("error") or final["message"])
        written = []
        for fmt in args.formats:
            result = _check(await client.get(f"/api/v1/transcribe/result/{task_id}", params={"format": fmt}))
            target = base.with_name(f"{base.name}.{fmt}")
            target.write_bytes(result.content)
            written.append(target)
        # Servers before these fields: nothing to print.
        return Transcribed(written, list(final.get("warnings") or []), list(final.get("notes") or []))
    finally:
        await client.delete(f"/api/v1/transcribe/task/{task_id}")  # the server keeps tasks until deleted


async def _run(args: argparse.Namespace, key: str) -> int:
    failures = 0
    headers = {"X-API-Key": key}
    # Uploads can be large and results slow: no overall timeout, only for connecting.
    timeout = httpx.Timeout(None, connect=10.0)
    async with httpx.AsyncClient(base_url=args.url, headers=headers, timeout=timeout) as client:
        # Check the key first: the server refuses a bad one before reading an upload, which
        # reaches a client still sending the file as a broken connection, not as the answer.
        try:
            health = _check(await client.get("/health")).json()
        except (ClientError, httpx.TransportError) as error:
            print(f"{args.url}: {_reason(error, args.url)}", file=sys.stderr)
            return 1
        limit_mb = health.get("max_upload_mb")  # servers before this field: no check here
        limit_bytes = int(limit_mb * 1024 * 1024) if limit_mb is not None else None
        bars = [
            _Bar(
                total=100,
                desc=path.name,
                position=index,
                unit="%",
                leave=True,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {status}",
            )
            for index, path in enumerate(args.files)
        ]
        jobs = zip(args.files, args.bases, bars, strict=True)
        outcomes = await asyncio.gather(
            *(_transcribe(client, path, base, args, bar, limit_bytes) for path, base, bar in jobs),
            return_exceptions=True,
        )
        for bar in bars:
            bar.close()
    for path, outcome in zip(args.files, outcomes, strict=True):
        if isinstance(outcome, Transcribed):
            print(f"{path}: wrote {', '.join(str(target) for target in outcome.written)}")
            for warning in outcome.warnings:
                print(f"{path}: warning: {warning}")
            for note in outcome.notes:
                print(f"{path}: note: {note}")
        elif isinstance(outcome, ClientError | httpx.HTTPError | OSError):
            failures += 1
            print(f"{path}: failed: {_reason(outcome, args.url)}", file=sys.stderr)
        else:
            raise outcome
    return 1 if failures else 0


def result_bases(files: Sequence[Path], output_dir: Path | None) -> list[Path]:
    """Where each input's results go, less the format's extension: its folder (or --output-dir)
    and its stem, or its whole name when another input would write to the same place (talk.mp3,
    talk.wav: talk.mp3.srt, talk.wav.srt). Keeping every result under its input's name beats
    refusing the run; only inputs with the very same name into one folder are refused (main)."""
    by_stem = [(output_dir or path.parent) / path.stem for path in files]
    places = [base.resolve() for base in by_stem]
    return [
        base.with_name(path.name) if places.count(place) > 1 else base
        for path, base, place in zip(files, by_stem, places, strict=True)
    ]


def _reason(error: Exception, url: str) -> str:
    if isinstance(error, httpx.TransportError):
        return f"cannot reach {url} ({type(error).__name__})"
    return str(error) or type(error).__name__


def _existing_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{value} is not a file")
    return path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="whisperx-api", description="Transcribe audio or video files on a WhisperX API server."
    )
    parser.add_argument("files", nargs="+", type=_existing_file, metavar="FILE", help="audio or video files")
    parser.add_argument(
        "--url", default=os.environ.get("WHISPERX_API_URL", "http://localhost:8000"),
        help="the server (default: $WHISPERX_API_URL or http://localhost:8000)",
    )  # fmt: skip
    parser.add_argument("--api-key", help="an API key (default: $WHISPERX_API_KEY)")
    parser.add_argument(
        "-f", "--format", dest="formats", action="append", choices=FORMATS,
        help="output format, repeatable (default: json); written next to each input as NAME.FORMAT",
    )  # fmt: skip
    parser.add_argument("-o", "--output-dir", type=Path, help="write the results here instead")
    parser.add_argument("--language", help="language code such as en (default: detected)")
    parser.add_argument("--no-diarization", action="store_true", help="do not label speakers")
    parser.add_argument("--min-speakers", type=int, help="fewest speakers to find")
    parser.add_argument("--max-speakers", type=int, help="most speakers to find")
    parser.add_argument("--prompt", help="text that guides spelling and style")
    parser.add_argument("--poll", action="store_true", help="poll the status instead of following live events")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    args.formats = list(dict.fromkeys(args.formats or ["json"]))
    key = args.api_key or os.environ.get("WHISPERX_API_KEY")
    if not key:
        parser.error("no API key: set WHISPERX_API_KEY (or pass --api-key)")
    args.bases = result_bases(args.files, args.output_dir)
    places = [base.resolve() for base in args.bases]
    clashing = [str(path) for path, place in zip(args.files, places, strict=True) if places.count(place) > 1]
    if clashing:  # checked before anything is uploaded, so no result is lost
        parser.error(f"{', '.join(clashing)} would write the same result files; rename one or run them apart")
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_run(args, key))


if __name__ == "__main__":
    sys.exit(main())
