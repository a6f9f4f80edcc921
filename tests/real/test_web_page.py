"""The web page in a real headless chromium against the real server and models.

A person's path: enter the key, upload a two-voice dialogue, follow its live progress, read the
speaker-coloured transcript, play from a word, download the subtitles, delete the task; and the
errors they may meet, shown as the API words them. Browser downloads do not work here, so the
SRT is read from the blob the page hands the browser to save.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import srt
from playwright.sync_api import Browser

from bench.diarization import make_dialogue
from tests.browser import RECORD_DOWNLOADS, Watched, open_page, shown_error, use_key
from tests.real.conftest import API_KEY, AUTH, Server, submit, wait_done, word_error_rate
from tests.real.test_diarization import TWO_VOICES

# Where the finished page is saved: a temporary file, unless scripts/web-page-picture names the docs picture.
PICTURE_VARIABLE = "WEB_PAGE_PICTURE"
DIALOGUE_TEXT = " ".join(text for _, text in TWO_VOICES)
MAX_WER = 0.2
# Waits for the browser: a transcription on a shared CPU can take minutes; nothing is timed.
TRANSCRIPTION_WAIT_MS = 300_000
TRANSCRIPT = "#transcript"


@pytest.fixture
def watched(browser: Browser, server: Server) -> Iterator[Watched]:
    with open_page(browser, server.url, [API_KEY, "not-the-key"]) as watched:
        yield watched


def _api_detail(response: httpx.Response) -> str:
    detail: str = response.json()["detail"]
    return detail


def test_errors_are_shown_as_the_api_words_them(watched: Watched, server: Server, tmp_path: Path) -> None:
    page = watched.page
    use_key(page, "not-the-key")
    wrong = httpx.get(f"{server.url}/api/v1/transcribe/tasks", headers={"X-API-Key": "not-the-key"})
    assert wrong.status_code == 401
    assert shown_error(page) == _api_detail(wrong)
    assert _api_detail(wrong).startswith("Invalid API key")

    use_key(page, API_KEY)
    page.wait_for_function("() => document.querySelector('#error').hidden")
    notes = tmp_path / "notes.txt"
    notes.write_text("These are meeting notes, not audio.\n" * 20)
    with notes.open("rb") as body:
        refused = httpx.post(f"{server.url}/api/v1/transcribe/upload", headers=AUTH, files={"file": (notes.name, body)})
    assert refused.status_code == 415
    page.locator("#file").set_input_files(notes)
    page.get_by_role("button", name="Transcribe").click()
    assert shown_error(page) == _api_detail(refused)
    assert "Supported formats" in _api_detail(refused)


@pytest.fixture(scope="module")
def dialogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("web")
    make_dialogue("dialogue", TWO_VOICES, 0.0, folder)
    return folder / "dialogue.wav"


@pytest.fixture(scope="module")
def stages_timed(server: Server, dialogue: Path) -> None:
    """The server has run the dialogue once: each stage has been timed, so the page can show an estimate
    (there is none until then), whatever ran before this module."""
    done = wait_done(submit(dialogue, server.url, language="en"), base_url=server.url)
    assert done["status"] == "completed", done


# Records every text the task list shows, so the test sees each progress update the page rendered.
RECORD_TASK_LIST = """() => {
  window.seenTaskTexts = [];
  new MutationObserver(() => {
    window.seenTaskTexts.push(document.querySelector('#tasks').innerText);
  }).observe(document.querySelector('#tasks'), {childList: true, subtree: true, characterData: true});
}"""


def test_upload_progress_transcript_playback_download_delete(
    watched: Watched, server: Server, dialogue: Path, stages_timed: None, tmp_path: Path
) -> None:
    page = watched.page
    use_key(page, API_KEY)
    page.evaluate(RECORD_TASK_LIST)
    page.locator("#file").set_input_files(dialogue)
    assert page.locator("#file-name").inner_text() == "dialogue.wav"
    page.get_by_label("Language").select_option("en")

    with page.expect_request(lambda r: "/api/v1/transcribe/events/" in r.url, timeout=60_000) as events:
        page.get_by_role("button", name="Transcribe").click()
    page.locator(f"{TRANSCRIPT} .turn").first.wait_for(timeout=TRANSCRIPTION_WAIT_MS)
    assert page.locator("#error").is_hidden()

    # Progress came from the live stream (only its events name the stage), shown as it came.
    assert events.value.headers["x-api-key"] == API_KEY
    seen = "\n".join(page.evaluate("window.seenTaskTexts"))
    assert re.search(r"\b(transcribing|aligning|diarizing)\b", seen), seen
    assert re.search(r"\d+%", seen), seen
    assert "left" in seen, "an ETA was shown"

    # One block per turn, two speakers, two colours, the spoken words.
    labels = page.locator(f"{TRANSCRIPT} .speaker").all_inner_texts()
    assert set(labels) == {"SPEAKER_00", "SPEAKER_01"}
    colours = page.locator(f"{TRANSCRIPT} .speaker").evaluate_all(
        "elements => elements.map(e => getComputedStyle(e).color)"
    )
    colour_of = dict(zip(labels, colours, strict=True))
    assert len(set(colour_of.values())) == 2, colour_of
    assert len(set(colours)) == 2
    assert len(labels) >= 4, "the speakers alternate, so there are several turns"
    text = page.locator(TRANSCRIPT).inner_text()
    assert word_error_rate(DIALOGUE_TEXT, re.sub(r"SPEAKER_\d+|\d\d:\d\d\.\d", " ", text)) <= MAX_WER, text
    assert page.locator(f"{TRANSCRIPT} time").first.inner_text().startswith("00:00.")

    # A word plays the local file from its start.
    word = page.locator(f"{TRANSCRIPT} button.word", has_text=re.compile("routine", re.IGNORECASE)).first
    start = float(word.get_attribute("data-start") or "nan")
    assert start > 1.0
    word.click()
    page.wait_for_function("() => !document.querySelector('#player').paused")
    played: dict[str, Any] = page.evaluate(
        "() => { const p = document.querySelector('#player'); return {src: p.src, time: p.currentTime}; }"
    )
    assert played["src"].startswith("blob:")
    assert played["time"] >= start - 0.05
    # The word being played is marked, from the clicked one on.
    page.wait_for_function(
        "start => Number(document.querySelector('#transcript .playing')?.dataset.start) >= start", arg=start
    )

    # The SRT download is a file named after the upload, with the speakers and the words.
    page.evaluate(RECORD_DOWNLOADS)
    with page.expect_response(lambda r: "format=srt" in r.url) as download:
        page.get_by_role("button", name="SRT", exact=True).click()
    assert download.value.status == 200
    assert download.value.request.headers["x-api-key"] == API_KEY
    page.wait_for_function("() => window.savedFiles.length === 1")
    saved = page.evaluate(
        "async () => ({name: window.savedFiles[0].name, text: await window.savedFiles[0].blob.text()})"
    )
    assert saved["name"] == "dialogue.srt"
    cues = list(srt.parse(saved["text"]))
    assert cues
    assert {re.match(r"\[(SPEAKER_\d+)\]: ", cue.content).group(1) for cue in cues} == set(labels)  # type: ignore[union-attr]
    spoken = " ".join(re.sub(r"^\[SPEAKER_\d+\]: ", "", cue.content) for cue in cues)
    assert word_error_rate(DIALOGUE_TEXT, spoken) <= MAX_WER, spoken
    assert page.locator("#error").is_hidden()

    page.mouse.move(0, 0)
    page.evaluate("() => document.querySelector('#player').pause()")
    picture = Path(os.environ.get(PICTURE_VARIABLE) or tmp_path / "web-page.png")
    page.screenshot(path=picture, full_page=True)
    assert picture.read_bytes().startswith(b"\x89PNG")

    # A phone-sized screen shows it all without sideways scrolling.
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("() => document.documentElement.scrollWidth <= document.documentElement.clientWidth")

    # The task list has the task; deleting it removes it here and on the server.
    task_id = events.value.url.rsplit("/", 1)[-1]
    row = page.locator(f'#tasks li[data-task-id="{task_id}"]')
    assert "completed" in row.inner_text()
    row.get_by_role("button", name="Delete").click()
    row.wait_for(state="detached")
    assert page.locator("#result").is_hidden()
    assert httpx.get(f"{server.url}/api/v1/transcribe/status/{task_id}", headers=AUTH).status_code == 404
