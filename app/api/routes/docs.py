"""GET /docs (Swagger UI) and /redoc (ReDoc), served with their scripts from the service itself.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so on a host without internet access
they are blank. The fastapi-offline package (MIT, widely used, depends on FastAPI alone) ships
both bundles; its files are served here under /static/docs/ and FastAPI's own templates render
the pages, so nothing leaves the host and no copy of the bundles lives in this repository.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.responses import HTMLResponse

from app.api.routes.page import ASSET_HEADERS, AssetFiles

ASSETS_PREFIX = "/static/docs"
ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"

# Swagger UI starts from one inline script in FastAPI's template; the CSP admits exactly that
# script by its hash. Both bundles set styles at run time (ReDoc writes <style> elements), hence
# 'unsafe-inline' for styles, which cannot run code. ReDoc's search runs in a worker made from a
# blob. Calls made with "Try it out" go to this same origin. ReDoc's sidebar also asks for its
# maker's logo from cdn.redoc.ly: img-src refuses it before any request leaves, and ReDoc hides it.
_POLICY_AFTER_SCRIPTS = [
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "worker-src blob:",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
]
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)
# Swagger UI's default would fetch a validity badge from validator.swagger.io.
_SWAGGER_UI_PARAMETERS = {"validatorUrl": None}

router = APIRouter(include_in_schema=False)
asset_files = AssetFiles(directory=ASSETS_DIR)


def _locked_down(page: HTMLResponse) -> HTMLResponse:
    """The page with a CSP that allows its own inline scripts (by hash) and same-origin files only."""
    body = bytes(page.body).decode()
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(body)
    ]
    policy = "; ".join(["default-src 'none'", " ".join(["script-src 'self'", *hashes]), *_POLICY_AFTER_SCRIPTS])
    page.headers.update({**ASSET_HEADERS, "Content-Security-Policy": policy, "Referrer-Policy": "no-referrer"})
    return page


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return _locked_down(
        get_swagger_ui_html(
            openapi_url=f"{root}{request.app.openapi_url}",
            title=f"{request.app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_PREFIX}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PREFIX}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PREFIX}/favicon.png",
            swagger_ui_parameters=_SWAGGER_UI_PARAMETERS,
        )
    )


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return _locked_down(
        get_redoc_html(
            openapi_url=f"{root}{request.app.openapi_url}",
            title=f"{request.app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_PREFIX}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_PREFIX}/favicon.png",
            with_google_fonts=False,
        )
    )
