"""TASK_BACKEND=celery between processes: a real redis-server, a Celery worker running the named
FakePipeline, and two API processes (`uvicorn tests.fakes:fake_app`), all separate processes.

A task's changes reach every API process however its connection to Redis fares, and a callback
owed while an API process restarts arrives once: neither lost with the process that saw the task
first, nor taken over by the restarted one while the other still retries it. What an API process
held when it was killed (SIGKILL: no clean hand-over) is taken over by another after
API_TAKEOVER_SECONDS: a callback it was retrying is delivered once, a task's end counted once.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.api.test_webhooks import SECRET
from tests.conftest import ROOT, Deadline, free_port

KEY = "delivery-key"
AUTH = {"X-API-Key": KEY}


class CuttingProxy:
    """Forwards loopback TCP connections to `target`; `cut()` drops every connection and refuses new ones
    (a network partition, a Redis failover) until `restore()`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._refusing = False
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            self._refusing = True
            for side in self._open:
                with contextlib.suppress(OSError):
                    side.shutdown(socket.SHUT_RDWR)
            self._open.clear()

    def restore(self) -> None:
        with self._lock:
            self._refusing = False

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._listener.accept()
                with self._lock:
                    if self._refusing:
                        client.close()
                        continue
                    upstream = socket.create_connection(self.target)
                    self._open |= {client, upstream}
                for source, sink in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        for side in (source, sink):
            with contextlib.suppress(OSError):
                side.shutdown(socket.SHUT_RDWR)


class Receiver:
    """A loopback callback receiver that refuses (503) until `accepting` is set; records each try."""

    def __init__(self) -> None:
        self.accepting = threading.Event()
        self.tries: list[tuple[str, bool]] = []
        """(webhook-id, accepted) of every callback received."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["content-length"]))
                accepted = receiver.accepting.is_set()
                receiver.tries.append((self.headers["webhook-id"], accepted))
                self.send_response(204 if accepted else 503)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Cluster:
    workdir: Path
    env: dict[str, str]
    redis: redis.Redis
    proxied_url: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def spawn(self, name: str, command: list[str], **env: str) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            command, cwd=ROOT, env={**self.env, **env}, stdout=log, stderr=log, start_new_session=True
        )

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def start_api(self, name: str, through_proxy: bool = False, **env: str) -> None:
        port = self.ports.setdefault(name, free_port())
        command = [sys.executable, "-m", "uvicorn", "tests.fakes:fake_app", "--factory", "--port", str(port)]
        if through_proxy:
            env["REDIS_URL"] = self.proxied_url
        self.spawn(name, [*command, "--host", "127.0.0.1"], **env)
        deadline = Deadline(60, f"API process {name} to be ready")
        while not self._ready(name):
            deadline.check(self.log(name)[-2000:])

    def _ready(self, name: str) -> bool:
        assert self.processes[name].poll() is None, self.log(name)[-3000:]
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(self.url(name, "/ready"), headers=AUTH).status_code == 200
        return False

    def stop(self, name: str) -> None:
        """SIGTERM, as a rolling restart sends, and wait for the process to finish its shutdown."""
        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)

    def kill(self, name: str) -> None:
        """SIGKILL, as a crash or an out-of-memory kill: no shutdown, nothing handed over."""
        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)

    def url(self, name: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"

    def submit(self, api: str, audio: Path, file_name: str, **form: Any) -> str:
        with audio.open("rb") as body:
            answer = httpx.post(
                self.url(api, "/api/v1/transcribe/upload"), headers=AUTH, files={"file": (file_name, body)}, data=form
            )
        assert answer.status_code == 202, answer.text
        task_id: str = answer.json()["task_id"]
        return task_id

    def stored_status(self, task_id: str) -> str | None:
        """The status as Redis holds it, read past every API process."""
        return self.redis.hget(f"whisperx:task:{task_id}", "status")  # type: ignore[return-value]

    def finish(self, file_name: str) -> None:
        """Let the fake pipeline's job for this file name finish."""
        (self.workdir / "gates" / file_name).touch()


@pytest.fixture(scope="module")
def proxy(redis_url: str) -> Iterator[CuttingProxy]:
    host, port = re.match(r"redis://([^:]+):(\d+)", redis_url).groups()  # type: ignore[union-attr]
    cutting = CuttingProxy((host, int(port)))
    yield cutting
    cutting.restore()
    cutting.close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    receiving = Receiver()
    yield receiving
    receiving.close()


@pytest.fixture(scope="module")
def cluster(redis_url: str, proxy: CuttingProxy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("delivery")
    (workdir / "gates").mkdir()
    url = re.sub(r"/\d+$", "/5", redis_url)  # a database of its own
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    env = {
        **os.environ,
        "TASK_BACKEND": "celery",
        "REDIS_URL": url,
        "API_KEYS": KEY,
        "UPLOAD_DIR": str(workdir / "uploads"),  # shared, as a network volume would be across machines
        "MODEL_CACHE_DIR": str(workdir / "cache"),
        "DATA_DIR": str(workdir / "data"),
        "MAX_CONCURRENT_TASKS": "1",
        "WEBHOOK_SECRET": SECRET,
        "WEBHOOK_ALLOW_PRIVATE": "true",
        "WEBHOOK_RETRY_BASE_SECONDS": "0.2",
        "WEBHOOK_MAX_ATTEMPTS": "20",
        "FAKE_GATE_DIR": str(workdir / "gates"),
        "LOG_LEVEL": "info",
    }
    cluster = Cluster(workdir, env, client, f"redis://127.0.0.1:{proxy.port}/5")
    try:
        cluster.spawn("worker", [sys.executable, "-c", "from tests.fakes import celery_worker; celery_worker()"])
        cluster.start_api("a")
        yield cluster
    finally:
        for name in list(cluster.processes):
            with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
                cluster.stop(name)
        for process in cluster.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


def _wait_for(condition: Any, seconds: float, awaiting: str) -> Any:
    deadline = Deadline(seconds, awaiting)
    while not (value := condition()):
        deadline.check()
        time.sleep(0.05)
    return value


def test_a_callback_owed_while_an_api_process_restarts_arrives_once(
    cluster: Cluster, receiver: Receiver, short_speech: Path
) -> None:
    task_id = cluster.submit("a", short_speech, "restart.wav", callback_url=receiver.url)
    # Process a saw the task first: the task's listeners are a's.
    _wait_for(lambda: cluster.stored_status(task_id) == "processing", 30, "the task to start")
    cluster.start_api("b", through_proxy=True)
    cluster.stop("a")
    cluster.finish("restart.wav")  # the task ends while process a is down; the receiver refuses for now
    _wait_for(lambda: receiver.tries, 30, "process b to try the callback")

    cluster.start_api("a")  # while b is still retrying: a must leave the callback to b
    receiver.accepting.set()
    _wait_for(lambda: any(accepted for _, accepted in receiver.tries), 60, "the callback to be accepted")
    _wait_for(lambda: cluster.redis.xlen("whisperx:callbacks") == 0, 30, "the callback to leave the queue")
    assert {webhook_id for webhook_id, _ in receiver.tries} == {f"{task_id}.completed"}, "one id, kept across tries"
    accepted = [webhook_id for webhook_id, accepted in receiver.tries if accepted]
    assert len(accepted) == 1, f"delivered {len(accepted)} times in {len(receiver.tries)} tries"
    assert "Taking over callback" not in cluster.log("a"), "the restarted process took a live process's callback"


def test_an_event_stream_sees_the_end_across_a_reconnect(
    cluster: Cluster, proxy: CuttingProxy, short_speech: Path
) -> None:
    for name in {"a", "b"} - cluster.processes.keys():  # whatever the test before left
        cluster.start_api(name, through_proxy=name == "b")
    task_id = cluster.submit("a", short_speech, "reconnect.wav")
    lines: list[str] = []

    def follow() -> None:
        url = cluster.url("b", f"/api/v1/transcribe/events/{task_id}")
        with contextlib.suppress(httpx.HTTPError), httpx.stream("GET", url, headers=AUTH, timeout=120) as stream:
            lines.extend(stream.iter_lines())

    threading.Thread(target=follow, daemon=True).start()
    _wait_for(lambda: "event: processing" in lines, 30, "process b's stream to show the task running")
    proxy.cut()  # process b loses Redis
    cluster.finish("reconnect.wav")
    _wait_for(lambda: cluster.stored_status(task_id) == "completed", 30, "the task to end")
    proxy.restore()
    _wait_for(lambda: "event: completed" in lines, 60, "process b's stream to show the end after reconnecting")


TAKEOVER = {"API_TAKEOVER_SECONDS": "3"}
"""For the takeover tests' API processes (all of them agree on it): seconds, not the default 30."""


def test_a_callback_held_by_a_killed_api_process_is_taken_over_and_delivered_once(
    cluster: Cluster, short_speech: Path
) -> None:
    for name in list(cluster.processes.keys() - {"worker"}):  # whatever the tests before left
        cluster.stop(name)
    receiver = Receiver()
    try:
        cluster.start_api("c", **TAKEOVER)
        task_id = cluster.submit("c", short_speech, "takeover.wav", callback_url=receiver.url)
        cluster.finish("takeover.wav")
        _wait_for(lambda: receiver.tries, 30, "process c to try the callback")  # c holds it: the only process
        cluster.start_api("d", **TAKEOVER)  # while c retries: d leaves it to c
        assert "Taking over callback" not in cluster.log("d"), "d took the callback of a live process"
        cluster.kill("c")  # before acknowledging: the callback stays in c's pending list
        receiver.accepting.set()
        _wait_for(lambda: any(accepted for _, accepted in receiver.tries), 60, "process d to deliver the callback")
        _wait_for(lambda: cluster.redis.xlen("whisperx:callbacks") == 0, 30, "the callback to leave the queue")
        assert "Taking over callback" in cluster.log("d")
        assert {webhook_id for webhook_id, _ in receiver.tries} == {f"{task_id}.completed"}, "one id, kept across tries"
        accepted = [webhook_id for webhook_id, accepted in receiver.tries if accepted]
        assert len(accepted) == 1, f"delivered {len(accepted)} times in {len(receiver.tries)} tries"
    finally:
        receiver.close()


def _finished(cluster: Cluster, name: str) -> float:
    """The process's count of completed tasks, from its /metrics."""
    text = httpx.get(cluster.url(name, "/metrics"), headers=AUTH).text
    found = re.search(r'^whisperx_tasks_finished_total\{status="completed"\} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_the_end_of_a_task_whose_api_process_was_killed_is_counted_once(cluster: Cluster, short_speech: Path) -> None:
    """The metrics of a task are kept by the API process that saw it first; killed, another counts its end."""
    for name in {"d"} - cluster.processes.keys():
        cluster.start_api(name, **TAKEOVER)
    for name in cluster.processes.keys() - {"worker", "d"}:
        cluster.stop(name)
    task_id = cluster.submit("d", short_speech, "counted.wav")
    listeners = f"whisperx:listeners:{task_id}"
    _wait_for(lambda: cluster.redis.get(listeners), 30, "process d to hold the task's listeners")  # the only one
    cluster.start_api("e", **TAKEOVER)
    holder = cluster.redis.get(listeners)
    cluster.kill("d")
    cluster.finish("counted.wav")  # at once: d's announcement outlives it by up to API_TAKEOVER_SECONDS
    _wait_for(lambda: cluster.stored_status(task_id) == "completed", 30, "the task to end")
    _wait_for(lambda: _finished(cluster, "e"), 30, "process e to count the end")
    assert cluster.redis.get(listeners) == "ended", f"held by {holder}, now {cluster.redis.get(listeners)}"
    assert _finished(cluster, "e") == 1.0
    assert "Counting the end of task" in cluster.log("e"), "e counted it for the killed process"
