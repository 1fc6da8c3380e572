"""The web UI (``/``) and the API docs page (``/docs``), served from the built
``web/`` folder (``make web``: ``npm ci`` + ``vite build`` into ``web/dist``).

Everything the browser loads comes from this server: no CDN, no external font,
so both pages work on a network without internet. ``index.html`` is sent with
``Cache-Control: no-cache`` (a new build shows at the next load); ``/assets/``
holds Vite's content-hashed files, cached for a year as immutable; ``/vendor/``
(Swagger UI's files, unhashed) is revalidated on every use (ETag).

HTML pages carry a Content-Security-Policy without ``'unsafe-inline'``
scripts: the UI has none, and the docs page starts Swagger UI from a script
file. The UI itself is a static page that calls the public API with the key
the user typed (kept in ``sessionStorage``, sent only in ``Authorization``).

If the build is missing, ``/`` and ``/docs`` answer 503 with a page saying to
run ``make web`` (never a 500).
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from sirocco.settings import Settings

#: ``web/dist`` of this checkout: where ``make web`` builds the UI.
DEFAULT_WEB_DIR = Path(__file__).resolve().parents[1] / "web" / "dist"

#: For the UI: scripts, styles, fetches only from this server.
UI_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
          "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
          "form-action 'self'; frame-ancestors 'none'")
#: Swagger UI sets style attributes, so the docs page allows inline styles (not scripts).
DOCS_CSP = UI_CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
SWAGGER = "vendor/swagger-ui"

router = APIRouter(include_in_schema=False)


def web_dir(settings: Settings) -> Path:
    """Where the built UI is: ``api.web_dir``, else ``web/dist`` of the checkout."""
    return settings.api.web_dir or DEFAULT_WEB_DIR


def page_headers(csp: str) -> dict[str, str]:
    """Headers of an HTML page: its CSP, no caching of the page itself, and no
    framing, sniffing or referrer leaks."""
    return {"Content-Security-Policy": csp, "Cache-Control": REVALIDATE,
            "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer"}


def not_built(root: Path, what: str) -> HTMLResponse:
    """The 503 page shown when the UI build is missing."""
    body = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sirocco: "
            f"{html.escape(what)} not built</title></head><body><h1>The {html.escape(what)} "
            f"is not built</h1><p>Run <code>make web</code> (npm ci and vite build) in the "
            f"Sirocco checkout, then reload this page. Expected the build in "
            f"<code>{html.escape(str(root))}</code>.</p><p>The API itself works: see "
            f"<code>README.md</code>.</p></body></html>")
    return HTMLResponse(body, status_code=503, headers=page_headers(UI_CSP))


@router.get("/")
def index(request: Request) -> Response:
    """The chatbot UI (a static page; it calls the API with the user's key)."""
    root = web_dir(request.app.state.settings)
    page = root / "index.html"
    if not page.is_file():
        return not_built(root, "web UI")
    return FileResponse(page, media_type="text/html", headers=page_headers(UI_CSP))


@router.get("/favicon.svg")
def favicon(request: Request) -> Response:
    """The icon of the UI and docs pages."""
    icon = web_dir(request.app.state.settings) / "favicon.svg"
    if not icon.is_file():
        return Response(status_code=404)
    return FileResponse(icon, media_type="image/svg+xml", headers={"Cache-Control": REVALIDATE})


def docs_page(settings: Settings) -> Response:
    """Swagger UI over ``/openapi.json``, from the locally built Swagger UI files."""
    root = web_dir(settings)
    if not (root / SWAGGER / "swagger-ui-bundle.js").is_file():
        return not_built(root, "API docs page (Swagger UI)")
    body = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<title>Sirocco API</title><link rel=\"icon\" href=\"/favicon.svg\">"
            f"<link rel=\"stylesheet\" href=\"/{SWAGGER}/swagger-ui.css\"></head>"
            "<body><div id=\"swagger-ui\"></div>"
            f"<script src=\"/{SWAGGER}/swagger-ui-bundle.js\"></script>"
            "<script src=\"/vendor/swagger-init.js\"></script></body></html>")
    return HTMLResponse(body, headers=page_headers(DOCS_CSP))


class WebFiles(StaticFiles):
    """Static files with a ``Cache-Control`` header; a folder that is not built
    yet gives 404s (StaticFiles would raise), and starts serving once built."""

    def __init__(self, directory: Path, cache_control: str) -> None:
        super().__init__(directory=directory, check_dir=False)
        self.cache_control = cache_control

    async def check_config(self) -> None:
        return None

    def file_response(self, full_path: str | os.PathLike[str], stat_result: os.stat_result,
                      scope: Scope, status_code: int = 200) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = self.cache_control
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def mount_web(app: FastAPI, settings: Settings) -> None:
    """Serve the UI at ``/`` with its hashed ``/assets/`` and the ``/vendor/`` files."""
    root = web_dir(settings)
    app.include_router(router)
    app.mount("/assets", WebFiles(root / "assets", IMMUTABLE), name="web-assets")
    app.mount("/vendor", WebFiles(root / "vendor", REVALIDATE), name="web-vendor")
