"""A checkpoint downloaded by two workers at once (two tasks asking for the same aligner): each writes
a file of its own, and the cache ends with one whole copy."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from app.config import Settings
from app.models.hub import download_file
from tests.conftest import free_port

CHECKPOINT = bytes(range(256)) * 8192  # 2 MiB, every byte where it belongs


@pytest.fixture
def server() -> Iterator[str]:
    both_started = threading.Barrier(2, timeout=10)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-length", str(len(CHECKPOINT)))
            self.end_headers()
            half = len(CHECKPOINT) // 2
            self.wfile.write(CHECKPOINT[:half])
            self.wfile.flush()
            both_started.wait()  # both downloads are half written before either ends
            self.wfile.write(CHECKPOINT[half:])

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/checkpoint.pth"
    httpd.shutdown()
    httpd.server_close()


def test_two_downloads_of_one_checkpoint_do_not_share_a_file(server: str, tmp_path: Path) -> None:
    target = tmp_path / "align" / "checkpoint.pth"
    settings = Settings(_env_file=None, api_keys="key", model_cache_dir=tmp_path)  # type: ignore[call-arg]

    def fetch() -> None:
        download_file(server, target, kind="alignment model", name="test", settings=settings, tqdm_class=None)

    with ThreadPoolExecutor(2) as pool:
        for running in [pool.submit(fetch), pool.submit(fetch)]:
            running.result()
    assert target.read_bytes() == CHECKPOINT
    assert [path.name for path in target.parent.iterdir()] == [target.name], "no partial file left behind"
