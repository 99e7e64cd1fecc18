"""The two web pages: the public form at / and the operators' page at /admin/.

Each page is one HTML document and a few assets from intake/web/, read once
when the app is built and served from memory; an asset is looked up by name
in a fixed table, never as a path on disk. Neither page carries data: the
form posts to the public API, the ops page reads the admin API with the token
the operator types in (kept in sessionStorage, sent as a bearer header).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler

from intake.form_rules import form_rules_json

_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
# Scripts and styles only from this origin (no inline script, so injected markup
# cannot run and read the admin token); no framing, no referrer, no outside fetches.
_SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
        " img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
RULES_PLACEHOLDER: Final = b"{{FORM_RULES}}"
# The form's ES modules: form.js, the entry the page loads, imports the others by name.
FORM_SCRIPTS: Final = ("form.js", "form-base.js", "form-check.js", "form-send.js",
                       "form-queue.js", "form-status.js")


@dataclass(frozen=True, slots=True)
class Page:
    """One page's document and its assets, ready to serve."""

    document: bytes
    assets: Mapping[str, tuple[bytes, str]]
    cache_control: str


def _read(name: str) -> bytes:
    return resources.files("intake").joinpath("web", name).read_bytes()


def _load(document: str, assets: tuple[str, ...], cache_control: str) -> Page:
    table = {name: (_read(name), _TYPES[name[name.rindex("."):]]) for name in assets}
    return Page(_read(document), table, cache_control)


@functools.cache
def form_page() -> Page:
    """The public registration form, with the validator's rules inlined as data."""
    page = _load("form.html", (*FORM_SCRIPTS, "form.css", "common.css"), "no-cache")
    return Page(page.document.replace(RULES_PLACEHOLDER, form_rules_json()), page.assets,
                page.cache_control)


@functools.cache
def ops_page() -> Page:
    """The operators' page (its data comes from the admin API, with the token)."""
    return _load("ops.html", ("ops.js", "ops.css", "common.css"), "no-store")


def _document_handler(page: Page) -> Handler:
    headers = {**_SECURITY_HEADERS, "Content-Type": _TYPES[".html"],
               "Cache-Control": page.cache_control}

    async def document(request: web.Request) -> web.Response:
        """The page's HTML."""
        return web.Response(body=page.document, headers=headers)

    return document


def _asset_handler(page: Page) -> Handler:
    async def asset(request: web.Request) -> web.Response:
        """One of the page's scripts or style sheets, by name."""
        found = page.assets.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        body, content_type = found
        return web.Response(body=body, headers={
            **_SECURITY_HEADERS, "Content-Type": content_type,
            "Cache-Control": page.cache_control})

    return asset


def add_page_routes(router: web.UrlDispatcher, page: Page, *, prefix: str, name: str) -> None:
    """The page at `prefix` and its assets under `prefix`assets/."""
    router.add_get(prefix, _document_handler(page), name=f"{name}.page", allow_head=False)
    router.add_get(prefix + "assets/{name}", _asset_handler(page), name=f"{name}.asset",
                   allow_head=False)
