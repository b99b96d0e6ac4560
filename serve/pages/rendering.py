"""The pages' templates: one Jinja2 environment with autoescape on (every value from the data is
text), and the context every page shares."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from leadscore.labels import number_text
from serve.pages.auth import csrf_token, keys_required, signed_in

HERE = Path(__file__).resolve().parent
TEMPLATE_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"
STATIC_PATH = "/pages/static"

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
    autoescape=True,  # every template, whatever its name ends with
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters["number"] = lambda v: "" if v is None else number_text(float(v))


def when_text(value: Any) -> str:
    """An ISO timestamp as people read it, to the minute in UTC ("2026-11-30 15:16 UTC");
    anything else as it is."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M") + " UTC"


_ENV.filters["when"] = when_text
TEMPLATES = Jinja2Templates(env=_ENV)


def root_of(request: Request) -> str:
    """The path the app is mounted under behind a proxy (`root_path`), for links."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def render(request: Request, name: str, context: dict[str, Any],
           status: int = 200) -> HTMLResponse:
    """A page from `templates/<name>` with the shared context (root path, CSRF token, whether
    sign-in is on)."""
    shared = {"root": root_of(request), "csrf": csrf_token(request),
              "keys_required": keys_required(request), "signed_in": signed_in(request)}
    response: HTMLResponse = TEMPLATES.TemplateResponse(
        request, name, {**shared, **context}, status_code=status)
    # pages hold lead data: never cached by a shared proxy, nor framed by another site
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
    return response
