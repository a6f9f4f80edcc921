"""Uploads into an S3-compatible bucket against uploads into UPLOAD_DIR: throughput and the API's memory.

Starts its own redis-server, moto's S3 server (`moto_server`, a process of its own) and the API
(`uvicorn app.main:app`, TASK_BACKEND=celery, no worker: the tasks stay queued) on loopback:
    python -m bench.storage [--mb 200] [--runs 3] [--redis-port 6391] [--api-port 8191] [--s3-port 5101]
For each storage in turn, --runs uploads of a --mb MiB WAV (a header and silence, generated as it
is sent, chunked), one at a time; prints the median wall time from the first byte sent to the 202
(the body received, checked by ffprobe and, with the bucket, completed there) as MiB/s, and the
API process's peak resident memory (VmHWM) before the first upload and after the last.
The bucket is moto's, in memory on this machine: it measures the service's path, not a real
bucket's network (see docs/deployment.md for AWS's published figures).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.session
import httpx

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-storage-key"
MIB = 1024 * 1024
BUCKET = "bench-uploads"


def _wav(size: int) -> Iterator[bytes]:
    yield b"--b\r\nContent-Disposition: form-data; name=file; filename=long.wav\r\n\r\n"
    header = struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
    yield b"RIFF" + struct.pack("<I", 36 + size) + b"WAVEfmt " + header + b"data" + struct.pack("<I", size)
    chunk = b"\0" * MIB
    for _ in range(size // MIB):
        yield chunk
    yield b"\r\n--b--\r\n"


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def _wait_for(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the API exited with {process.returncode}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/live", headers={"X-API-Key": KEY}).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError("the API did not start")


def _measure(env: dict[str, str], port: int, size: int, runs: int) -> tuple[float, float, float]:
    """Median MiB/s, and the API's peak memory before and after, in MiB."""
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
    api = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(url, api)
        before = _peak_rss_mib(api.pid)
        rates = []
        for _ in range(runs):
            started = time.perf_counter()
            response = httpx.post(
                f"{url}/api/v1/transcribe/upload", content=_wav(size), timeout=600,
                headers={"X-API-Key": KEY, "content-type": "multipart/form-data; boundary=b"},
            )  # fmt: skip
            elapsed = time.perf_counter() - started
            if response.status_code != 202:
                raise RuntimeError(f"upload refused: {response.status_code} {response.text}")
            rates.append(size / MIB / elapsed)
            httpx.delete(f"{url}/api/v1/transcribe/task/{response.json()['task_id']}", headers={"X-API-Key": KEY})
        return statistics.median(rates), before, _peak_rss_mib(api.pid)
    finally:
        api.terminate()
        api.wait(30)


def _bucket_alone(client: object, size: int) -> float:
    """MiB/s of botocore alone sending the same bytes in the service's parts, one at a time: the bucket's own pace."""
    from app.storage.s3 import PART_BYTES

    s3: Any = client
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="ceiling")
    part = b"\0" * PART_BYTES
    started = time.perf_counter()
    for number in range(1, size // PART_BYTES + 1):
        s3.upload_part(Bucket=BUCKET, Key="ceiling", UploadId=upload["UploadId"], PartNumber=number, Body=part)
    elapsed = time.perf_counter() - started
    s3.abort_multipart_upload(Bucket=BUCKET, Key="ceiling", UploadId=upload["UploadId"])
    return (size // PART_BYTES) * PART_BYTES / MIB / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--mb", type=int, default=200, help="MiB per upload")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--redis-port", type=int, default=6391)
    parser.add_argument("--api-port", type=int, default=8191)
    parser.add_argument("--s3-port", type=int, default=5101)
    args = parser.parse_args()
    size = args.mb * MIB

    with tempfile.TemporaryDirectory(prefix="bench-storage-") as temp:
        redis_server = subprocess.Popen(
            ["redis-server", "--port", str(args.redis_port), "--bind", "127.0.0.1", "--save", "", "--dir", temp],
            stdout=subprocess.DEVNULL,
        )
        credentials = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret"}
        moto = subprocess.Popen(
            [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(args.s3_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        endpoint = f"http://127.0.0.1:{args.s3_port}"
        try:
            os.environ.update(credentials, AWS_DEFAULT_REGION="us-east-1")
            client = botocore.session.get_session().create_client("s3", endpoint_url=endpoint)
            for _ in range(100):
                with contextlib.suppress(Exception):
                    client.create_bucket(Bucket=BUCKET)
                    break
                time.sleep(0.2)
            env = {
                **os.environ, "API_KEYS": KEY, "TASK_BACKEND": "celery", "LOG_LEVEL": "warning",
                "REDIS_URL": f"redis://127.0.0.1:{args.redis_port}/0", "UPLOAD_DIR": str(Path(temp) / "uploads"),
                "DATA_DIR": str(Path(temp) / "data"), "MAX_UPLOAD_MB": str(args.mb + 10),
            }  # fmt: skip
            local = _measure(env, args.api_port, size, args.runs)
            bucket_env = {**env, "STORAGE_URL": f"s3://{BUCKET}/bench", "S3_ENDPOINT_URL": endpoint}
            bucket = _measure(bucket_env, args.api_port, size, args.runs)
            alone = _bucket_alone(client, size)
        finally:
            moto.terminate()
            redis_server.terminate()
            moto.wait(10)
            redis_server.wait(10)

    print(f"{args.mb} MiB uploads, median of {args.runs}, {os.cpu_count()} CPU cores, API and storage on loopback")
    print("storage              upload MiB/s   API peak memory before -> after (MiB)")
    for name, (rate, before, after) in (("UPLOAD_DIR", local), ("S3 bucket (moto)", bucket)):
        print(f"{name:<20} {rate:>12.1f}   {before:>7.0f} -> {after:.0f}  (+{after - before:.0f})")
    print(f"the bucket alone     {alone:>12.1f}   (botocore sending the same parts one by one, no service)")


if __name__ == "__main__":
    main()
