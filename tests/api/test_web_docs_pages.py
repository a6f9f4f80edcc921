"""/docs and /redoc render from the service's own files: in chromium, with every request that would
leave the host refused, each operation of the OpenAPI document appears, and the CSP blocks nothing."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Route

from tests.browser import Watched

LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}


@contextmanager
def _offline_page(browser: Browser, base_url: str) -> Iterator[tuple[Watched, list[str]]]:
    """A page whose requests to any host but this one's loopback are aborted (and listed)."""
    context = browser.new_context(viewport={"width": 1100, "height": 900}, base_url=base_url)
    refused: list[str] = []

    def only_loopback(route: Route) -> None:
        if urlsplit(route.request.url).hostname in LOOPBACK:
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort("internetdisconnected")

    context.route("**/*", only_loopback)
    page = context.new_page()
    page.set_default_timeout(30_000)
    watched = Watched(page)
    try:
        yield watched, refused
    finally:
        context.close()


def _operations(base_url: str) -> list[tuple[str, str]]:
    document = httpx.get(f"{base_url}/openapi.json").json()
    return [(method.upper(), path) for path, item in document["paths"].items() for method in item]


@pytest.fixture
def base_url(live_server: Callable[..., int]) -> str:
    return f"http://127.0.0.1:{live_server()}"


def test_swagger_ui_shows_every_operation_offline(browser: Browser, base_url: str) -> None:
    operations = _operations(base_url)
    with _offline_page(browser, base_url) as (watched, refused):
        page = watched.page
        page.goto("/docs")
        blocks = page.locator(".opblock-summary")
        blocks.nth(len(operations) - 1).wait_for()
        shown = {
            (block.locator(".opblock-summary-method").inner_text(), block.locator(".opblock-summary-path").inner_text())
            for block in blocks.all()
        }
        assert {(method, path.replace("\u200b", "")) for method, path in shown} == set(operations)
        # The bundle itself ran: an operation opens and offers "Try it out".
        page.locator(".opblock-summary", has_text="/health").first.click()
        page.get_by_role("button", name="Try it out").wait_for()
    assert refused == []
    watched.check_clean(secrets=[])


def test_redoc_shows_every_operation_offline(browser: Browser, base_url: str) -> None:
    operations = _operations(base_url)
    with _offline_page(browser, base_url) as (watched, refused):
        page = watched.page
        page.goto("/redoc")
        sections = page.locator("[data-section-id^='operation/']")
        sections.nth(len(operations) - 1).wait_for(state="attached")
        assert sections.count() == len(operations)
        assert page.get_by_text("WhisperX Transcription API").first.is_visible()
    assert refused == []
    # ReDoc's sidebar asks for its maker's logo from a CDN: the CSP refuses it before a request
    # is made (so `refused` stays empty) and ReDoc hides the image. Nothing else is refused.
    logo = "https://cdn.redoc.ly/redoc/logo-mini.svg"
    assert [text for text in watched.console if "Content Security Policy" in text and logo not in text] == []
    watched.console = [text for text in watched.console if logo not in text]
    watched.check_clean(secrets=[])


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_pages_load_only_their_own_files_without_a_key(base_url: str, path: str) -> None:
    page = httpx.get(f"{base_url}{path}")
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "https:" not in policy
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets, "the page loads no script or style"
    for asset in assets:
        assert asset.startswith("/static/docs/"), asset
        response = httpx.get(f"{base_url}{asset}")
        assert response.status_code == 200, asset
        assert response.headers["x-content-type-options"] == "nosniff"
