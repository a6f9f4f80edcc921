"""The web page's microphone button in a real headless chromium against the real server and live
models: chromium's fake microphone plays an espeak-ng sentence (looped), the page streams it to
/v1/realtime, shows partial text, then final lines with a speaker, and after Stop saves them as TXT."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, WebSocket

from tests.browser import RECORD_DOWNLOADS, RECORD_PARTIALS, open_page, use_key
from tests.conftest import chromium, ffmpeg, microphone_args, speak
from tests.real.conftest import API_KEY, Server

SENTENCE = "The weather is warm and sunny today."
KEY_WORDS = ("weather", "sunny")
# Waits on the page: the live worker loads its model with the first session, on a shared CPU.
LIVE_WAIT_MS = 120_000


@pytest.fixture(scope="module")
def microphone_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sentence, then a second and a half of silence so that server VAD ends each (looped) utterance."""
    folder = tmp_path_factory.mktemp("microphone")
    clip = folder / "microphone.wav"
    sentence = speak(SENTENCE, folder / "sentence.wav")
    ffmpeg("-i", str(sentence), "-af", "apad=pad_dur=1.5", "-c:a", "pcm_s16le", str(clip))
    return clip


@pytest.fixture(scope="module")
def microphone_browser(microphone_clip: Path) -> Iterator[Browser]:
    """Chromium whose microphone is the clip (its own launch: the module uses no other)."""
    with chromium(*microphone_args(microphone_clip)) as launched:
        yield launched


def test_microphone_partials_final_lines_with_a_speaker_and_txt_download(
    microphone_browser: Browser, server: Server
) -> None:
    sockets: list[WebSocket] = []
    with open_page(microphone_browser, server.url, [API_KEY]) as watched:
        page = watched.page
        page.on("websocket", lambda socket: sockets.append(socket))
        use_key(page, API_KEY)
        assert page.locator("#mic-note").is_hidden()
        page.evaluate(RECORD_PARTIALS)
        page.get_by_role("button", name="Start microphone").click()
        assert page.get_by_role("button", name="Stop").get_attribute("aria-pressed") == "true"

        # A final line with the known words and a speaker label.
        line = page.locator("#live-transcript .turn", has_text=KEY_WORDS[0])
        line.first.wait_for(timeout=LIVE_WAIT_MS)
        final = line.first.inner_text().lower()
        assert all(word in final for word in KEY_WORDS), final
        # A label, not necessarily SPEAKER_00: a first utterance that caught only the sentence's end
        # may have been heard as another voice.
        assert re.fullmatch(r"SPEAKER_\d\d", line.first.locator(".speaker").inner_text())
        assert page.evaluate("window.seenPartials.length") > 0, "partial text was shown while speaking"

        page.get_by_role("button", name="Stop").click()
        page.get_by_role("button", name="Start microphone").wait_for(timeout=LIVE_WAIT_MS)
        assert page.locator("#error").is_hidden(), page.locator("#error").inner_text()
        assert page.locator("#live-partial").is_hidden()

        # The TXT download holds every final line shown, each with its speaker (the first utterance, if
        # it caught only the end of the looped sentence, may be too short for a voiceprint: no label).
        shown = page.locator("#live-transcript .turn p").all_inner_texts()
        speakers = page.locator("#live-transcript .turn .speaker").all_inner_texts()
        page.evaluate(RECORD_DOWNLOADS)
        page.get_by_role("button", name="Download the live transcript as TXT").click()
        page.wait_for_function("() => window.savedFiles.length === 1")
        saved = page.evaluate(
            "async () => ({name: window.savedFiles[0].name, text: await window.savedFiles[0].blob.text()})"
        )
        assert saved["name"].startswith("live-")
        assert saved["name"].endswith(".txt")
        assert saved["text"].splitlines() == [
            text if speaker == "Speaker unknown" else f"[{speaker}]: {text}"
            for speaker, text in zip(speakers, shown, strict=True)
        ]
        assert all(word in saved["text"].lower() for word in KEY_WORDS), saved["text"]

    # The key went as a subprotocol, never in the socket's URL.
    assert [socket.url.split("://", 1)[1] for socket in sockets] == [
        f"{server.url.split('://', 1)[1]}/v1/realtime?intent=transcription"
    ]
