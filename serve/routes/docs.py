"""`/docs` (Swagger UI) and `/redoc` from the package's own static files: no CDN, no Google
fonts, no online validator, so the docs work offline and leak no visit to a third party."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
STATIC_PATH = "/static"

router = APIRouter(include_in_schema=False)


def static_files() -> StaticFiles:
    """The vendored assets (see `serve/static/README.md` for versions and licences)."""
    return StaticFiles(directory=STATIC_DIR)


def _prefix(request: Request) -> str:
    """The path the app is mounted under behind a proxy (`root_path`), for links in the HTML."""
    return str(request.scope.get("root_path", "")).rstrip("/")


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    root = _prefix(request)
    return get_swagger_ui_html(
        openapi_url=f"{root}/openapi.json",
        title="leadscore - Swagger UI",
        swagger_js_url=f"{root}{STATIC_PATH}/swagger-ui/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{STATIC_PATH}/swagger-ui/swagger-ui.css",
        swagger_favicon_url=f"{root}{STATIC_PATH}/swagger-ui/favicon-32x32.png",
        # the default validator badge posts the schema to validator.swagger.io
        swagger_ui_parameters={"validatorUrl": None},
    )


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    root = _prefix(request)
    return get_redoc_html(
        openapi_url=f"{root}/openapi.json",
        title="leadscore - ReDoc",
        redoc_js_url=f"{root}{STATIC_PATH}/redoc/redoc.standalone.js",
        redoc_favicon_url=f"{root}{STATIC_PATH}/swagger-ui/favicon-32x32.png",
        with_google_fonts=False,
    )
