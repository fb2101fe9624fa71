"""GET /playground: a page for learners that calls the public API like any other client.

Its HTML, CSS and JavaScript are files in this package (app/static/playground), served as they
are: no build step, no CDN, so it works offline. The page only uses /v1/layers, /v1/shapes and
/v1/sequential, with the API key the user types in when the server asks for one. The page and its
assets are open without a key, like /docs (Settings.auth_exempt_paths).
"""

from importlib.resources import files

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = files("app") / "static" / "playground"
ASSETS_URL = "/static/playground"
PAGE_URL = "/playground"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        # Everything from this server: the page has no inline script or style attribute to allow.
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",  # an uploaded picture is decoded from a blob: URL
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'none'",
    ]
)


def install_playground(app: FastAPI) -> None:
    """Mount the page's assets and add GET /playground (not in the OpenAPI document: it is not an API)."""
    app.mount(ASSETS_URL, StaticFiles(directory=str(ASSETS)), name="playground-assets")
    page = (ASSETS / "index.html").read_text(encoding="utf-8")

    @app.get(PAGE_URL, include_in_schema=False)
    async def playground() -> HTMLResponse:
        return HTMLResponse(
            page,
            headers={
                "Content-Security-Policy": CONTENT_SECURITY_POLICY,
                "Referrer-Policy": "no-referrer",  # the fragment holds the state
                "X-Content-Type-Options": "nosniff",
            },
        )
