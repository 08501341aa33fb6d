"""The API reference at /schema: Scalar, served from clinic/static/vendor/ like every other front-end file, on a page
with no inline script, under the same Content-Security-Policy as every other page."""

from __future__ import annotations

import html
from typing import Any

import msgspec
from litestar import Request
from litestar.openapi.plugins import ScalarRenderPlugin

SCRIPT = "/static/vendor/scalar-api-reference.js"
# the fonts Scalar would fetch from its own servers are left out; the page uses the browser's
OPTIONS = {"withDefaultFonts": False, "hideClientButton": True}


class ApiReference(ScalarRenderPlugin):
    def __init__(self) -> None:
        super().__init__(js_url=SCRIPT, path="/", favicon="", style="")

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        title = html.escape(openapi_schema["info"]["title"])
        url = html.escape(self.get_openapi_json_route(request))
        config = html.escape(msgspec.json.encode(OPTIONS).decode())
        # the element Scalar reads its settings from is an empty <script>: nothing inline runs, so CSP has nothing to refuse
        return (
            "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title></head><body>"
            "<noscript>The API reference needs JavaScript; the schema itself is at /schema/openapi.json.</noscript>"
            f"<script id=\"api-reference\" data-url=\"{url}\" data-configuration=\"{config}\"></script>"
            f"<script src=\"{SCRIPT}\"></script></body></html>"
        ).encode()
