"""GET /: the web page, and its files under /static/.

Both are open without a key, like /docs: they hold no data, and every call the page makes
sends the key the person enters.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
STATIC_PREFIX = "/static"

# Same-origin scripts, styles and API calls only; no inline code, no framing. `blob:` media is
# the person's own file, played back from memory.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self' data:",
        "media-src blob:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The page changes with the service: browsers revalidate it (its ETag makes that cheap).
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)
static_files = StaticFiles(directory=WEB_DIR)


@router.get("/")
async def page() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)
