"""A model hub on loopback that speaks the part of the Hugging Face protocol huggingface_hub uses, serving
local files; and a black hole (a listener that accepts and never answers), for an unreachable hub.

Endpoints (as huggingface_hub 0.36 calls them):
  GET  /api/models/{repo}[/revision/{rev}]   model info: `sha` and `siblings` (the file list)
  HEAD /{repo}/resolve/{rev}/{file}          ETag, X-Repo-Commit, Content-Length
  GET  /{repo}/resolve/{rev}/{file}          the file

Every request is recorded, so a test can tell whether a load went to the network at all.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.conftest import free_port


class Hub:
    def __init__(self, repos: dict[str, Path]) -> None:
        """`repos` maps a repo id to the local folder whose files it serves."""
        self.repos = repos
        self.requests: list[str] = []
        self.open = threading.Event()
        """Cleared: each request is recorded, then held until it is set again (a download in progress)."""
        self.open.set()
        self._lock = threading.Lock()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def commit(self, repo: str) -> str:
        return hashlib.sha1(repo.encode()).hexdigest()  # noqa: S324 - an id, as git's, not security

    def files(self, repo: str) -> list[str]:
        folder = self.repos[repo]
        return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer(body=True)

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def _answer(self, body: bool) -> None:
                with hub._lock:
                    hub.requests.append(f"{self.command} {self.path}")
                hub.open.wait(60)
                path = self.path.split("?", 1)[0]
                if info := re.fullmatch(r"/api/models/(.+?)(?:/revision/[^/]+)?", path):
                    self._model_info(info.group(1))
                elif resolve := re.fullmatch(r"/(.+)/resolve/[^/]+/(.+)", path):
                    self._file(resolve.group(1), resolve.group(2), body)
                else:
                    self._send(404, b"{}", {"Content-Type": "application/json"})

            def _model_info(self, repo: str) -> None:
                if repo not in hub.repos:
                    # As the hub answers for a repo it does not have.
                    self._send(404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"})
                    return
                siblings = [{"rfilename": name} for name in hub.files(repo)]
                document = {"id": repo, "modelId": repo, "sha": hub.commit(repo), "private": False,
                            "siblings": siblings}  # fmt: skip
                self._send(200, json.dumps(document).encode(), {"Content-Type": "application/json"})

            def _file(self, repo: str, name: str, body: bool) -> None:
                file = hub.repos.get(repo, Path("/nonexistent")) / name
                if not file.is_file():
                    self._send(404, b"", {"X-Error-Code": "EntryNotFound"})
                    return
                size = file.stat().st_size
                etag = hashlib.sha256(f"{repo}/{name}/{size}".encode()).hexdigest()
                self.send_response(200)
                headers = {"ETag": f'"{etag}"', "X-Repo-Commit": hub.commit(repo), "Content-Length": str(size),
                           "Content-Type": "application/octet-stream"}  # fmt: skip
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if body:
                    with file.open("rb") as source:
                        shutil.copyfileobj(source, self.wfile, 1 << 20)

            def _send(self, code: int, content: bytes, headers: dict[str, str]) -> None:
                self.send_response(code)
                for key, value in {**headers, "Content-Length": str(len(content))}.items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(content)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def file_requests(self, name: str) -> int:
        return sum(1 for request in self.requests if request.startswith("GET ") and request.endswith(f"/{name}"))

    def start(self) -> Hub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def running_hub(repos: dict[str, Path]) -> Iterator[Hub]:
    hub = Hub(repos).start()
    try:
        yield hub
    finally:
        hub.stop()


class BlackHole:
    """Accepts connections and never answers: a hub that is there but silent."""

    def __init__(self, port: int | None = None) -> None:
        self._socket = socket.socket()
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", port or 0))
        self._socket.listen(64)
        self.port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            self.accepted.append(connection)  # held open, never read from or answered

    def close(self) -> None:
        self._socket.close()
        for connection in self.accepted:
            connection.close()


@contextmanager
def black_hole(port: int | None = None) -> Iterator[BlackHole]:
    hole = BlackHole(port)
    try:
        yield hole
    finally:
        hole.close()


def random_wav2vec2_ctc(target: Path) -> Path:
    """A tiny wav2vec2 CTC model with random weights and a character vocabulary: real files in the
    transformers layout, for testing how an aligner is fetched and loaded. Its times are meaningless."""
    from transformers import (  # type: ignore[attr-defined]
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )

    target.mkdir(parents=True, exist_ok=True)
    letters = list("abcdefghijklmnopqrstuvwxyz'")
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, **{c: i + 5 for i, c in enumerate(letters)}}
    (target / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = Wav2Vec2CTCTokenizer(str(target / "vocab.json"), word_delimiter_token="|")
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, do_normalize=True)
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(target)
    config = Wav2Vec2Config(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(32, 32, 32, 32, 32, 32, 32), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
        pad_token_id=0,
    )  # fmt: skip
    Wav2Vec2ForCTC(config).save_pretrained(target)
    return target
