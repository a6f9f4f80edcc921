"""The web page's microphone button in chromium, on the fast tier's FakeLiveEngine: chromium's fake
microphone plays speech (looped); the page shows the fake engine's partial text, then final lines
with their speaker and times; Stop keeps the utterance under way; the lines are saved as TXT, SRT
and VTT. The real models' run is tests/real/test_live_web_page.py."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
import srt
from playwright.sync_api import Browser

from tests.api.conftest import API_KEY
from tests.browser import RECORD_DOWNLOADS, RECORD_PARTIALS, open_page, use_key
from tests.conftest import chromium, ffmpeg, microphone_args, speak
from tests.fakes import FAKE_LIVE_WORDS

# About 6.5 s of speech without a pause the fake engine would end an utterance at.
SENTENCE = "Hello there, this is a longer test of the microphone button, which keeps on talking for quite a while."


@pytest.fixture(scope="module")
def microphone_browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Chromium whose microphone plays the sentence, then a second and a half of silence that ends
    each utterance (the fake engine hears any sound as speech)."""
    folder = tmp_path_factory.mktemp("microphone")
    clip = folder / "microphone.wav"
    sentence = speak(SENTENCE, folder / "sentence.wav")
    ffmpeg("-i", str(sentence), "-af", "apad=pad_dur=1.5", "-c:a", "pcm_s16le", str(clip))
    with chromium(*microphone_args(clip)) as launched:
        yield launched


def test_microphone_partials_final_lines_stop_and_downloads(
    microphone_browser: Browser, live_server: Callable[..., int]
) -> None:
    port = live_server()
    with open_page(microphone_browser, f"http://127.0.0.1:{port}", [API_KEY]) as watched:
        page = watched.page
        use_key(page, API_KEY)
        page.evaluate(RECORD_PARTIALS)
        page.get_by_role("button", name="Start microphone").click()
        # The first line may be the end of the sentence, caught mid-way; the next utterance is the
        # whole sentence. Stop a second into it: the rest of it, and the silence that would end it,
        # are never sent; Stop's commit makes it a final line all the same.
        page.locator("#live-transcript .turn").first.wait_for()
        page.locator("#live-partial").wait_for(state="visible")
        assert page.locator("#live-transcript .turn").count() == 1
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
        assert len(texts) == 2, texts
        assert all(text.split() == FAKE_LIVE_WORDS[: len(text.split())] for text in texts), texts
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
    assert cues[1].start.total_seconds() == pytest.approx(_seconds(times[1].split(" – ")[0]), abs=0.06)
    assert files["vtt"].startswith("WEBVTT\n\n")
    assert [line for line in files["vtt"].splitlines() if line.startswith("<v ")] == [
        f"<v {speaker}>{text}" for speaker, text in zip(speakers, texts, strict=True)
    ]


def _seconds(clock: str) -> float:
    minutes, seconds = clock.split(":")
    return int(minutes) * 60 + float(seconds)
