"""The web page's microphone button in chromium, on the fast tier's FakeLiveEngine: chromium's fake
microphone plays speech (looped); the page shows the fake engine's partial text, then final lines
with their speaker and times, and after Stop saves them as TXT, SRT and VTT. The real models'
run is tests/real/test_live_web_page.py."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import srt
from playwright.sync_api import Browser

from tests.api.conftest import API_KEY
from tests.browser import RECORD_DOWNLOADS, RECORD_PARTIALS, open_page, use_key
from tests.conftest import chromium, ffmpeg, microphone_args
from tests.fakes import FAKE_LIVE_WORDS


@pytest.fixture(scope="module")
def microphone_browser(short_speech: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Chromium whose microphone plays the short sentence, then a second and a half of silence that
    ends each utterance (the fake engine hears any sound as speech)."""
    clip = tmp_path_factory.mktemp("microphone") / "microphone.wav"
    ffmpeg("-i", str(short_speech), "-af", "apad=pad_dur=1.5", "-c:a", "pcm_s16le", str(clip))
    with chromium(*microphone_args(clip)) as launched:
        yield launched


def test_microphone_shows_partials_and_final_lines_and_saves_them(
    microphone_browser: Browser, live_server: Callable[..., int]
) -> None:
    port = live_server()
    with open_page(microphone_browser, f"http://127.0.0.1:{port}", [API_KEY]) as watched:
        page = watched.page
        use_key(page, API_KEY)
        page.evaluate(RECORD_PARTIALS)
        page.get_by_role("button", name="Start microphone").click()
        page.locator("#live-transcript .turn").first.wait_for()
        page.get_by_role("button", name="Stop").click()
        page.get_by_role("button", name="Start microphone").wait_for()
        assert page.locator("#error").is_hidden(), page.locator("#error").inner_text()

        # Partial text grew word by word (the fake engine's words), then each utterance became a line.
        partials = page.evaluate("window.seenPartials")
        assert partials, "partial text was shown"
        assert all(" ".join(FAKE_LIVE_WORDS).startswith(text.removesuffix("…")) for text in partials), partials
        texts = page.locator("#live-transcript .turn p").all_inner_texts()
        speakers = page.locator("#live-transcript .turn .speaker").all_inner_texts()
        times = page.locator("#live-transcript .turn time").all_inner_texts()
        assert texts[0].split() == FAKE_LIVE_WORDS[: len(texts[0].split())]
        assert len(texts[0].split()) >= 3
        assert set(speakers) == {"SPEAKER_00"}
        assert all(re.fullmatch(r"\d\d:\d\d\.\d – \d\d:\d\d\.\d", time) for time in times), times
        assert page.locator("#live-partial").is_hidden()

        # A phone-sized screen shows the card without sideways scrolling.
        page.set_viewport_size({"width": 390, "height": 844})
        assert page.evaluate("() => document.documentElement.scrollWidth <= document.documentElement.clientWidth")

        page.evaluate(RECORD_DOWNLOADS)
        for format in ("TXT", "SRT", "VTT"):
            page.get_by_role("button", name=f"Download the live transcript as {format}").click()
        page.wait_for_function("() => window.savedFiles.length === 3")
        saved = page.evaluate(
            "async () => Promise.all(window.savedFiles.map(async (f) => [f.name, await f.blob.text()]))"
        )
    files = {name.rsplit(".", 1)[1]: text for name, text in saved}
    assert all(re.fullmatch(r"live-\d{4}-\d\d-\d\d-\d{4}\.(txt|srt|vtt)", name) for name, _ in saved), saved
    labelled = [f"[{speaker}]: {text}" for speaker, text in zip(speakers, texts, strict=True)]
    assert files["txt"].splitlines() == labelled
    cues = list(srt.parse(files["srt"]))
    assert [cue.content for cue in cues] == labelled
    assert all(cue.start < cue.end for cue in cues)
    assert cues[0].start.total_seconds() == pytest.approx(_seconds(times[0].split(" – ")[0]), abs=0.06)
    assert files["vtt"].startswith("WEBVTT\n\n")
    assert [line for line in files["vtt"].splitlines() if line.startswith("<v ")] == [
        f"<v {speaker}>{text}" for speaker, text in zip(speakers, texts, strict=True)
    ]


def _seconds(clock: str) -> float:
    minutes, seconds = clock.split(":")
    return int(minutes) * 60 + float(seconds)
