"""The web UI and the docs page as the API serves them: open without a key,
a Content-Security-Policy without inline scripts, cache headers that fit
hashed and unhashed files, no external URL on /docs, and a clear 503 (not a
500) when the build is missing. The pages themselves run in a real browser in
tests/e2e/test_e2e_web.py."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from api.app import create_app
from api.web import IMMUTABLE
from sirocco.settings import Settings


def client(settings: Settings) -> httpx.AsyncClient:
    app = create_app(settings, services=object())  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def csp_directives(value: str) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in value.split(";") if d.strip()}


async def test_the_ui_is_served_at_the_root_with_its_csp_and_cache_headers(
        tmp_path: Path, web_build: Path) -> None:
    async with client(Settings(env="test", data_dir=tmp_path,
                               api={"web_dir": web_build})) as c:
        r = await c.get("/")  # no key: the page asks for one itself
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert '<div id="app">' in r.text
        assert r.headers["cache-control"] == "no-cache"
        csp = csp_directives(r.headers["content-security-policy"])
        assert csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'"]
        assert csp["connect-src"] == ["'self'"] and csp["frame-ancestors"] == ["'none'"]
        assert r.headers["x-frame-options"] == "DENY"

        asset = await c.get("/assets/index-3f9a1c.js")
        assert asset.status_code == 200 and asset.headers["cache-control"] == IMMUTABLE
        again = await c.get("/assets/index-3f9a1c.js",
                            headers={"if-none-match": asset.headers["etag"]})
        assert again.status_code == 304
        vendor = await c.get("/vendor/swagger-ui/swagger-ui.css")
        assert vendor.status_code == 200 and vendor.headers["cache-control"] == "no-cache"
        assert (await c.get("/assets/missing-123.js")).status_code == 404
        assert (await c.get("/assets/..%2f..%2fetc%2fpasswd")).status_code == 404
        # The API stays behind its key.
        assert (await c.get("/api/me")).status_code == 401


async def test_docs_load_swagger_ui_from_this_server_only(tmp_path: Path,
                                                          web_build: Path) -> None:
    settings = Settings(env="test", data_dir=tmp_path, api={"web_dir": web_build},
                        auth={"open_endpoints": ["docs"]})
    async with client(settings) as c:
        r = await c.get("/docs")
    assert r.status_code == 200 and "swagger-ui-bundle.js" in r.text
    urls = re.findall(r'(?:src|href)="([^"]*)"', r.text)
    assert urls and all(u.startswith("/") and not u.startswith("//") for u in urls), urls
    assert "http://" not in r.text and "https://" not in r.text
    # Started from a script file: no inline script on the page.
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", r.text) == []
    csp = csp_directives(r.headers["content-security-policy"])
    assert csp["script-src"] == ["'self'"]


async def test_a_missing_build_says_to_run_make_web(tmp_path: Path) -> None:
    settings = Settings(env="test", data_dir=tmp_path, api={"web_dir": tmp_path / "nothing"},
                        auth={"open_endpoints": ["docs"]})
    async with client(settings) as c:
        for path in ("/", "/docs"):
            r = await c.get(path)
            assert r.status_code == 503, path
            assert "make web" in r.text and str(tmp_path / "nothing") in r.text
        assert (await c.get("/assets/index-3f9a1c.js")).status_code == 404
        assert (await c.get("/favicon.svg")).status_code == 404


def test_the_default_build_folder_is_web_dist_of_the_checkout() -> None:
    from api.web import web_dir

    assert web_dir(Settings(env="test")) == Path(__file__).resolve().parents[2] / "web" / "dist"
