"""Swagger UI at /docs and ReDoc at /redoc, from packaged assets rather than a CDN, so they work offline.

The assets are Swagger UI 5 and ReDoc 2 as the `fastapi-offline` package ships them (we use its
files only, not its app class).
"""

from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = files("fastapi_offline") / "static"
ASSETS_URL = "/static/docs"
SWAGGER_UI_PARAMETERS = {
    "docExpansion": "list",  # every operation listed, none expanded
    "defaultModelsExpandDepth": 0,  # schemas listed at the bottom, collapsed
    "displayRequestDuration": True,  # "Try it out" shows how long the request took
    "filter": True,  # a search box over operations
}

SWAGGER_ASSETS = {
    "swagger_js_url": "swagger-ui-bundle.js",
    "swagger_css_url": "swagger-ui.css",
    "swagger_favicon_url": "favicon.png",
}
REDOC_ASSETS = {"redoc_js_url": "redoc.standalone.js", "redoc_favicon_url": "favicon.png"}
"""The pages' assets, packaged in app/static/docs (no CDN), by the keyword FastAPI's page helper takes."""


def install_docs(app: FastAPI) -> None:
    """Mount the assets and add /docs, its OAuth2 redirect and /redoc (create the app with docs_url=None)."""
    app.mount(ASSETS_URL, StaticFiles(directory=str(ASSETS)), name="docs-assets")
    oauth2_redirect = "/docs/oauth2-redirect"

    def page_urls(request: Request, assets: dict[str, str]) -> dict[str, Any]:
        """The spec's URL and each asset's, under the root path the app is served at."""
        root = request.scope.get("root_path", "")
        return {"openapi_url": f"{root}{app.openapi_url}"} | {
            name: f"{root}{ASSETS_URL}/{file}" for name, file in assets.items()
        }

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            title=f"{app.title}: try the layers",
            oauth2_redirect_url=f"{request.scope.get('root_path', '')}{oauth2_redirect}",
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
            **page_urls(request, SWAGGER_ASSETS),
        )

    @app.get(oauth2_redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            title=f"{app.title}: reference", with_google_fonts=False, **page_urls(request, REDOC_ASSETS)
        )
