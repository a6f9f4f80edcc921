"""The web page's speaker names in chromium, on the FakePipeline (its fake voiceprints):
rename a speaker in an open transcript, remember the voice, and the next transcript shows the name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
from playwright.sync_api import Browser

from tests.api.conftest import API_KEY, AUTH
from tests.browser import open_page, use_key
from tests.conftest import speak


def test_rename_remember_and_the_next_transcript_names_the_voice(
    browser: Browser, live_server: Callable[..., int], short_speech: Path, tmp_path: Path
) -> None:
    port = live_server()
    with open_page(browser, f"http://127.0.0.1:{port}", [API_KEY]) as watched:
        page = watched.page
        use_key(page, API_KEY)
        page.locator("#file").set_input_files(short_speech)
        page.get_by_role("button", name="Transcribe").click()
        page.locator("#transcript .turn").first.wait_for()
        task_id = page.locator("#tasks li").first.get_attribute("data-task-id")

        page.get_by_label("Name of SPEAKER_00").fill("Alice")
        page.locator("#speaker-list li").first.get_by_role("button", name="Rename").click()
        page.get_by_label("Name of Alice").wait_for()
        assert page.locator("#transcript .speaker").all_inner_texts() == ["Alice", "SPEAKER_01"]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=AUTH) as api:
            srt = api.get(f"/api/v1/transcribe/result/{task_id}", params={"format": "srt"}).text
        assert "[Alice]" in srt

        page.locator("#speaker-list li").first.get_by_role("button", name="Remember voice").click()
        page.get_by_role("button", name="Voice remembered").wait_for()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=AUTH) as api:
            assert [voice["name"] for voice in api.get("/api/v1/speakers").json()["speakers"]] == ["Alice"]

        # Another recording: the fake's voiceprints there are close to the remembered one, not the same.
        page.locator("#file").set_input_files(speak("Another recording, on another day.", tmp_path / "next.wav"))
        page.get_by_role("button", name="Transcribe").click()
        newer = page.locator(f"#tasks li:not([data-task-id='{task_id}'])")
        newer.filter(has_text="completed").wait_for()
        # Empty the open transcript, so the one read below is certainly the new task's.
        page.evaluate("() => document.querySelector('#transcript').replaceChildren()")
        newer.get_by_role("button", name="Open").click()
        page.locator("#transcript .turn").first.wait_for()
        assert page.locator("#transcript .speaker").all_inner_texts() == ["Alice", "SPEAKER_01"]
        page.get_by_label("Name of Alice").wait_for()
        assert page.locator("#error").is_hidden()
