"""GET /: the web page, and its files under /static/.

Both are open without a key, like /docs: they hold no data, and every call the page makes
sends the key the person enters.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

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
# The page and its modules change with the service: browsers revalidate them (their ETags make
# that cheap), so an upgrade never pairs a new page with old scripts.
ASSET_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
PAGE_HEADERS = {**ASSET_HEADERS, "Content-Security-Policy": CONTENT_SECURITY_POLICY, "Referrer-Policy": "no-referrer"}


class _AssetFiles(StaticFiles):
    def file_response(
        self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        # The page's headers on every file: the page itself is here too (/static/index.html), and
        # the policy costs nothing on a script or a stylesheet.
        response.headers.update(PAGE_HEADERS)
        return response


router = APIRouter(include_in_schema=False)
static_files = _AssetFiles(directory=WEB_DIR)


@router.get("/")
async def page() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)
