"""Helpers for driving the web page in the `browser` fixture's chromium."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import Browser, ConsoleMessage, Page, Request

# Records each file the page hands the browser to save: the link's name and its blob's content.
RECORD_DOWNLOADS = """() => {
  window.savedFiles = [];
  const blobs = new Map();
  const createObjectURL = URL.createObjectURL;
  URL.createObjectURL = (blob) => { const url = createObjectURL(blob); blobs.set(url, blob); return url; };
  const click = HTMLAnchorElement.prototype.click;
  HTMLAnchorElement.prototype.click = function () {
    if (this.download) window.savedFiles.push({name: this.download, blob: blobs.get(this.href)});
    return click.call(this);
  };
}"""

# Records every partial text the page shows.
RECORD_PARTIALS = """() => {
  window.seenPartials = [];
  const partial = document.querySelector('#live-partial');
  new MutationObserver(() => { if (!partial.hidden) window.seenPartials.push(partial.textContent); })
    .observe(partial, {childList: true, subtree: true, characterData: true, attributes: true});
}"""


class Watched:
    """A page with its requests, script errors and console messages recorded."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.urls: list[str] = []
        self.script_errors: list[str] = []
        self.console: list[str] = []
        page.on("request", self._request)
        page.on("pageerror", lambda error: self.script_errors.append(str(error)))
        page.on("console", self._console)

    def _request(self, request: Request) -> None:
        self.urls.append(request.url)

    def _console(self, message: ConsoleMessage) -> None:
        self.console.append(message.text)

    def check_clean(self, secrets: list[str]) -> None:
        """No uncaught script error, nothing the CSP refused, no secret in any URL requested."""
        assert self.script_errors == []
        assert not [text for text in self.console if "Content Security Policy" in text]
        assert not [url for url in self.urls for secret in secrets if secret in url], "a key went into a URL"


@contextmanager
def open_page(browser: Browser, base_url: str, secrets: list[str]) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1100, "height": 900}, base_url=base_url)
    page = context.new_page()
    # Waits for the page's own reactions; waits for transcriptions pass their own timeout.
    page.set_default_timeout(30_000)
    watched = Watched(page)
    page.goto("/")
    yield watched
    context.close()
    watched.check_clean(secrets)


def use_key(page: Page, key: str) -> None:
    page.get_by_role("textbox", name="API key").fill(key)
    page.get_by_role("button", name="Use key").click()


def shown_error(page: Page) -> str:
    """The page's error message, once one is shown."""
    page.wait_for_function("() => !document.querySelector('#error').hidden")
    return page.get_by_role("alert").inner_text()
