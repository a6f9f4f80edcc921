"""The web page at / and its files: open without a key, typed, locked down by CSP; data still needs the key.

The page's whole path runs in chromium on the real models in tests/real/test_web_page.py.
"""

from __future__ import annotations

import http.client
import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser

from app.api.routes.page import WEB_DIR
from app.media import SUPPORTED_EXTENSIONS, too_large_message
from tests.api.conftest import API_KEY, AUTH
from tests.browser import open_page, shown_error, use_key
from tests.fakes import FAKE_TEXT


class _PageParser(HTMLParser):
    """Collects what the page loads and anything a strict CSP would block."""

    def __init__(self) -> None:
        super().__init__()
        self.assets: list[str] = []
        self.blocked: list[str] = []
        self.accept = ""
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name, _ in attrs:
            if name.startswith("on") or name == "style":
                self.blocked.append(f"<{tag} {name}=...>")
        if tag == "style":
            self.blocked.append("<style>")
        if tag == "script":
            self._in_script = True
            self.assets.append(values["src"] or "")
        if tag == "link" and values.get("rel") == "stylesheet":
            self.assets.append(values["href"] or "")
        if tag == "input" and values.get("type") == "file":
            self.accept = values["accept"] or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.blocked.append("inline <script>")


def _parsed(client: TestClient) -> _PageParser:
    parser = _PageParser()
    parser.feed(client.get("/").text)
    return parser


@pytest.mark.parametrize("path", ["/", "/static/index.html"])
def test_page_is_served_without_a_key_with_a_strict_csp(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    policy = dict(part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"
    assert policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "<title>WhisperX Transcription</title>" in response.text


def test_page_has_nothing_the_csp_would_block(client: TestClient) -> None:
    parser = _parsed(client)
    assert parser.blocked == []
    assert parser.assets, "the page loads its script and stylesheet"


@pytest.mark.parametrize(
    ("path", "media_type"),
    [
        ("/static/style.css", "text/css"),
        ("/static/app.js", "javascript"),
        ("/static/api.js", "javascript"),
        ("/static/transcript.js", "javascript"),
        ("/static/live.js", "javascript"),
        ("/static/pcm-worklet.js", "javascript"),
    ],
)
def test_assets_are_served_without_a_key(client: TestClient, path: str, media_type: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert media_type in response.headers["content-type"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-cache"
    assert response.content == (WEB_DIR / path.removeprefix("/static/")).read_bytes()


def test_every_asset_the_page_and_its_modules_load_exists(client: TestClient) -> None:
    paths = set(_parsed(client).assets)
    for script in WEB_DIR.glob("*.js"):
        paths |= {f"/static/{name}" for name in re.findall(r'from "\./([\w.]+)"', script.read_text())}
        paths |= set(re.findall(r'addModule\("(/static/[\w.-]+)"\)', script.read_text()))  # audio worklets
    assert len(paths) == 6
    for path in paths:
        assert client.get(path).status_code == 200, path


def test_file_picker_offers_the_supported_formats(client: TestClient) -> None:
    offered = {part.removeprefix(".") for part in _parsed(client).accept.split(",") if part.startswith(".")}
    assert offered == set(SUPPORTED_EXTENSIONS)


@pytest.mark.parametrize(
    "path",
    [
        "/static/missing.js",
        "/static/../config.py",
        "/static/%2e%2e/config.py",
        "/static/..%2fmain.py",
        "/static/../api/v1/transcribe/tasks",
    ],
)
def test_static_paths_do_not_reach_outside_their_folder(live_server: Callable[..., int], path: str) -> None:
    # http.client sends the path as written; httpx would resolve the dots first.
    connection = http.client.HTTPConnection("127.0.0.1", live_server(), timeout=10)
    connection.request("GET", path)
    response = connection.getresponse()
    assert response.status == 404
    assert response.getheader("content-type") == "application/problem+json"
    connection.close()


@pytest.mark.parametrize("path", ["/index.html", "/health", "/api/v1/transcribe/tasks", "/docs/../health"])
def test_other_paths_still_need_the_key(live_server: Callable[..., int], path: str) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", live_server(), timeout=10)
    connection.request("GET", path)
    assert connection.getresponse().status == 401
    connection.close()


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def test_speaker_colours_are_distinct_and_readable_on_white() -> None:
    css = (WEB_DIR / "style.css").read_text()
    colours = re.findall(r"\.speaker-\d \{ --speaker: (#[0-9a-f]{6}); \}", css)
    assert len(colours) == 8
    assert len(set(colours)) == len(colours)
    for colour in colours:
        contrast = 1.05 / (_luminance(colour) + 0.05)
        assert contrast >= 4.5, f"{colour} has contrast {contrast:.2f}:1 on white"


# In chromium, on the fast tier's FakePipeline: the errors and paths the real tier's test does not reach.


def test_browser_shows_the_missing_key_and_too_large_messages(
    browser: Browser, live_server: Callable[..., int], tmp_path: Path
) -> None:
    port = live_server(max_upload_mb=0.25)
    big = tmp_path / "big.wav"
    # Far over the limit: the server answers 413 before reading the body, and the page still shows it.
    big.write_bytes(b"\0" * 8_000_000)
    with open_page(browser, f"http://127.0.0.1:{port}", [API_KEY]) as watched:
        page = watched.page
        page.locator("#file").set_input_files(big)
        page.get_by_role("button", name="Transcribe").click()
        assert shown_error(page).startswith("Missing X-API-Key header: ")

        use_key(page, API_KEY)
        page.wait_for_function("() => document.querySelector('#error').hidden")
        page.get_by_role("button", name="Transcribe").click()
        assert shown_error(page) == too_large_message(int(0.25 * 1024 * 1024))


def test_browser_shows_why_a_task_failed(browser: Browser, live_server: Callable[..., int], short_speech: Path) -> None:
    port = live_server(fake_env={"FAKE_MODE": "fail"})
    with open_page(browser, f"http://127.0.0.1:{port}", [API_KEY]) as watched:
        page = watched.page
        use_key(page, API_KEY)
        page.locator("#file").set_input_files(short_speech)
        page.get_by_role("button", name="Transcribe").click()
        message = shown_error(page)
        task_id = page.locator("#tasks li").get_attribute("data-task-id")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=AUTH) as api:
            failed = api.get(f"/api/v1/transcribe/status/{task_id}").json()
        assert failed["status"] == "failed"
        assert message == failed["error"]
        assert message in page.locator("#tasks li").inner_text()


def test_browser_shows_a_results_warnings_above_the_transcript_and_marks_the_task(
    browser: Browser, live_server: Callable[..., int], short_speech: Path
) -> None:
    warning = "this audio may contain more than one language (en at the start, de later on)"
    note = "words timed by Whisper; the wav2vec2 alignment model for en is not cached"
    port = live_server(fake_env={"FAKE_WARNING": warning, "FAKE_NOTE": note})
    with open_page(browser, f"http://127.0.0.1:{port}", [API_KEY]) as watched:
        page = watched.page
        use_key(page, API_KEY)
        page.locator("#file").set_input_files(short_speech)
        page.get_by_role("button", name="Transcribe").click()
        page.locator("#transcript .turn").first.wait_for()
        banner = page.locator("#result-remarks")
        assert banner.is_visible()
        assert banner.locator("li").all_inner_texts() == [f"Warning: {warning}", f"Note: {note}"]
        mark = page.locator("#tasks li .remark-mark")
        assert mark.inner_text() == "⚠ 1 warning"
        assert mark.get_attribute("title") == f"{warning}\n{note}"
        page.reload()  # the list's mark comes from the server's task list too
        assert page.locator("#tasks li .remark-mark").inner_text() == "⚠ 1 warning"


def test_browser_keeps_the_key_for_the_tab_and_lists_earlier_tasks(
    browser: Browser, live_server: Callable[..., int], short_speech: Path
) -> None:
    port = live_server()
    with open_page(browser, f"http://127.0.0.1:{port}", [API_KEY]) as watched:
        page = watched.page
        use_key(page, API_KEY)
        page.locator("#file").set_input_files(short_speech)
        page.get_by_role("button", name="Transcribe").click()
        page.locator("#transcript .turn").first.wait_for()
        assert page.locator("#player").is_visible()
        assert FAKE_TEXT in page.locator("#transcript").inner_text()
        assert page.locator("#result-remarks").is_hidden(), "nothing to warn of: no banner"
        assert page.locator("#tasks li .remark-mark").count() == 0

        page.reload()
        row = page.locator("#tasks li")
        assert "completed" in row.inner_text()
        # The name and length come from the server now, not from the file this tab chose.
        listed = httpx.get(f"http://127.0.0.1:{port}/api/v1/transcribe/tasks", headers=AUTH).json()["tasks"][0]
        seconds = round(listed["duration"])
        length = f"{seconds // 60}:{seconds % 60:02d}"  # as people say it: 0:03, not 00:02.6
        assert row.locator(".task-name").inner_text() == f"short.wav {length}"
        assert row.get_by_role("button", name="Delete short.wav").is_visible()
        assert page.evaluate("() => sessionStorage.length") == 1
        row.get_by_role("button", name="Open").click()
        page.locator("#transcript .turn").first.wait_for()
        assert page.locator("#result-heading").inner_text() == "Transcript of short.wav"
        assert f"length {length}" in page.locator("#result-meta").inner_text()
        # The file stayed in the earlier page: there is nothing to play, and the page says so.
        assert page.locator("#player").is_hidden()
        assert page.locator("#player-note").is_visible()


def test_browser_disables_the_microphone_outside_https_and_localhost(
    browser: Browser, live_server: Callable[..., int]
) -> None:
    port = live_server()
    with open_page(browser, f"http://127.0.0.1:{port}", [API_KEY]) as watched:
        # Loopback is a secure context: the button works, no note.
        assert watched.page.get_by_role("button", name="Start microphone").is_enabled()
        assert watched.page.locator("#mic-note").is_hidden()
        # The same page from a plain-HTTP host name (served by the same server through a route) is not.
        watched.page.route(
            "http://transcribe.example/**",
            lambda route: route.fulfill(
                response=route.fetch(url=route.request.url.replace("transcribe.example", f"127.0.0.1:{port}"))
            ),
        )
        watched.page.goto("http://transcribe.example/")
        assert watched.page.evaluate("window.isSecureContext") is False
        assert watched.page.get_by_role("button", name="Start microphone").is_disabled()
        note = watched.page.locator("#mic-note")
        assert note.is_visible()
        assert "only on HTTPS or on localhost" in note.inner_text()


def test_browser_shows_a_wrong_key_before_opening_a_live_session(
    browser: Browser, live_server: Callable[..., int]
) -> None:
    port = live_server()
    with open_page(browser, f"http://127.0.0.1:{port}", [API_KEY, "not-the-key"]) as watched:
        page = watched.page
        sockets: list[str] = []
        page.on("websocket", lambda socket: sockets.append(socket.url))
        # The key as the key form stores it, without the task list's call (which would show the error first).
        page.evaluate("() => sessionStorage.setItem('whisperx-api-key', 'not-the-key')")
        page.get_by_role("button", name="Start microphone").click()
        refused = httpx.get(f"http://127.0.0.1:{port}/health", headers={"X-API-Key": "not-the-key"})
        assert refused.status_code == 401
        assert shown_error(page) == refused.json()["detail"]
        assert page.get_by_role("button", name="Start microphone").is_enabled()
        assert sockets == [], "no session was opened with a key the API refuses"
