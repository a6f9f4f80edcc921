"""Command-line client: transcribe files on a running service, a progress bar per file.

    whisperx-api --format srt --format txt talk.mp3 interview.wav
    python -m app.client ...          (the same, without installing the project)

Each file is uploaded, followed over Server-Sent Events (or by polling, with --poll), and its
result is written next to it (talk.srt, talk.txt); the task is then deleted from the server.
The exit status is 0 when every file was transcribed, 1 otherwise. The key comes from
WHISPERX_API_KEY (preferred: command lines are visible to other users) or --api-key.

Only light packages are imported here (httpx, httpx-sse, tqdm): no torch, no whisperx.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import SSEError, aconnect_sse
from tqdm import tqdm

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


def _show(bar: tqdm[Any], state: dict[str, Any]) -> None:
    bar.n = state.get("progress", 0.0)
    eta = state.get("eta_seconds")
    bar.set_postfix_str(f"{state['message']}" + (f", ~{eta:.0f} s left" if eta is not None else ""), refresh=False)
    bar.refresh()


async def _follow_events(client: httpx.AsyncClient, task_id: str, bar: tqdm[Any]) -> dict[str, Any]:
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


async def _poll(client: httpx.AsyncClient, task_id: str, bar: tqdm[Any]) -> dict[str, Any]:
    while True:
        state: dict[str, Any] = _check(await client.get(f"/api/v1/transcribe/status/{task_id}")).json()
        _show(bar, state)
        if state["status"] in TERMINAL:
            return state
        await asyncio.sleep(POLL_SECONDS)


async def _transcribe(client: httpx.AsyncClient, path: Path, args: argparse.Namespace, bar: tqdm[Any]) -> list[Path]:
    form = {"enable_diarization": str(not args.no_diarization).lower()}
    for name in ("language", "min_speakers", "max_speakers", "prompt"):
        if (value := getattr(args, name)) is not None:
            form[name] = str(value)
    with path.open("rb") as audio:
        response = _check(await client.post("/api/v1/transcribe/upload", files={"file": (path.name, audio)}, data=form))
    task_id = response.json()["task_id"]
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
            target = (args.output_dir or path.parent) / f"{path.stem}.{fmt}"
            target.write_bytes(result.content)
            written.append(target)
        return written
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
            _check(await client.get("/health"))
        except (ClientError, httpx.TransportError) as error:
            print(f"{args.url}: {_reason(error, args.url)}", file=sys.stderr)
            return 1
        bars = [
            tqdm(
                total=100,
                desc=path.name,
                position=index,
                unit="%",
                leave=True,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}",
            )
            for index, path in enumerate(args.files)
        ]
        outcomes = await asyncio.gather(
            *(_transcribe(client, path, args, bar) for path, bar in zip(args.files, bars, strict=True)),
            return_exceptions=True,
        )
        for bar in bars:
            bar.close()
    for path, outcome in zip(args.files, outcomes, strict=True):
        if isinstance(outcome, list):
            print(f"{path}: wrote {', '.join(str(target) for target in outcome)}")
        elif isinstance(outcome, ClientError | httpx.HTTPError | OSError):
            failures += 1
            print(f"{path}: failed: {_reason(outcome, args.url)}", file=sys.stderr)
        else:
            raise outcome
    return 1 if failures else 0


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
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_run(args, key))


if __name__ == "__main__":
    sys.exit(main())
