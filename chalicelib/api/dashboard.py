"""The Dashboard: one page and its two files, served by the API itself at `/dashboard`.

Same origin as the v3 API it calls, so there is no second server, no CORS and no build step: the
files under `static/dashboard/` are shipped as they are. Each answer carries a Content-Security-
Policy that allows scripts, styles and requests from this origin only (no inline script, no
inline style, no frames), so a value from the service that somehow reached the page as markup
still could not run. The page links its files relatively (`dashboard/app.js`), which resolves
under API Gateway's stage prefix (`/api/dashboard/app.js`) as it does locally.
"""
from __future__ import annotations

from pathlib import Path

from chalice import Response

from chalicelib.core.errors import NotFound

FILES = Path(__file__).parent / "static" / "dashboard"
# The only names served: a request names one of these or nothing (no path is ever joined).
PAGE = "index.html"  # served at /dashboard only: its relative links resolve from there
TYPES = {PAGE: "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
         "style.css": "text/css; charset=utf-8", "favicon.svg": "image/svg+xml"}
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
          "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": POLICY, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Cache-Control": "no-cache"}


def _read(name: str) -> str:
    """Read at each request: a few KB, and no cache to keep fresh."""
    return (FILES / name).read_text(encoding="utf-8")


def page() -> Response:
    return _file(PAGE)


def asset(name: str) -> Response:
    if name not in TYPES or name == PAGE:
        return _not_found(name)
    return _file(name)


def _file(name: str) -> Response:
    return Response(_read(name), status_code=200, headers={"Content-Type": TYPES[name], **HEADERS})


def _not_found(name: str) -> Response:
    error = NotFound(f"The Dashboard has no file {name[:64]!r}.", target={"type": "file", "name": name[:64]})
    return Response(error.body(""), status_code=404, headers={"Content-Type": "application/json", **HEADERS})
