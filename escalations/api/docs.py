"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) from assets installed with the API, never a CDN.

The JavaScript and CSS come from the ``fastapi-offline`` wheel (Swagger UI's ``swagger-ui-dist``
bundle and ReDoc's standalone bundle, refreshed by its releases), served under
``/docs/assets/``: the pages work without a network to the outside, behind a proxy that
blocks CDNs. The pages are sent with a Content-Security-Policy that keeps them on the API's
own origin: what the bundles would still fetch from outside (ReDoc's "API docs by Redocly"
logo, which it drops when the image fails) is never asked for. Public like ``/openapi.json``
(the schema holds no data). Swagger UI shows each operation's ``operationId``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import HTMLResponse

DOCS = "/docs"
REDOC = "/redoc"
ASSETS = "/docs/assets"
OAUTH2_REDIRECT = "/docs/oauth2-redirect"
ASSET_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
# Inline script and styles: FastAPI's pages start the bundles inline, and both bundles style inline.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'self'"
)
SWAGGER_PARAMETERS = {
    "displayOperationId": True,
    "validatorUrl": None,  # Swagger UI's default asks validator.swagger.io about the schema
    "persistAuthorization": False,
}


def assets_dir() -> Path:
    """The folder holding ``ASSET_FILES`` (inside the installed ``fastapi_offline`` package)."""
    folder = Path(str(resources.files("fastapi_offline") / "static"))
    missing = [name for name in ASSET_FILES if not (folder / name).is_file()]
    if missing:
        raise RuntimeError(f"the API docs assets are missing from {folder}: {', '.join(missing)} "
                           "(reinstall fastapi-offline)")
    return folder


def install_docs(app: FastAPI) -> None:
    """Serve the two pages and their assets on ``app`` (made with ``docs_url=None, redoc_url=None``)."""
    assert app.docs_url is None and app.redoc_url is None, "FastAPI's own (CDN) pages must be off"
    app.mount(ASSETS, StaticFiles(directory=assets_dir()), name="docs-assets")

    def _root(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    def _own_origin(page: HTMLResponse) -> HTMLResponse:
        page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return page

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = _root(request)
        return _own_origin(get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT}",
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon.png",
            swagger_ui_parameters=SWAGGER_PARAMETERS,
        ))

    async def oauth2_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        root = _root(request)
        return _own_origin(get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS}/favicon.png",
            with_google_fonts=False,
        ))

    # Plain routes, like FastAPI's own pages: not operations of the API, so not in its schema.
    app.add_route(DOCS, swagger_ui, include_in_schema=False)
    app.add_route(OAUTH2_REDIRECT, oauth2_redirect, include_in_schema=False)
    app.add_route(REDOC, redoc, include_in_schema=False)
