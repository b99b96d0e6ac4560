"""The pages for people, served by the API's app: sign-in, the lead board, a lead's page (and
the model page and the score-one-lead form). `install(app)` adds the routers, the static files
and the handlers that turn a missing sign-in into a redirect and a page error into a page."""

from __future__ import annotations

import logging

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from serve.errors import error_response
from serve.pages import board, lead, signin
from serve.pages.auth import PageError, SignInRequired, log_open_pages
from serve.pages.form import form_router
from serve.pages.model import model_router
from serve.pages.rendering import STATIC_DIR, STATIC_PATH, render, root_of

log = logging.getLogger("serve")

router = APIRouter(include_in_schema=False)
router.include_router(signin.router)
router.include_router(board.router)
router.include_router(model_router)
router.include_router(form_router)
router.include_router(lead.router)

HEADINGS = {400: "That view cannot be shown", 403: "Not allowed", 404: "Not found"}


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def install(app: FastAPI) -> None:
    """Add the pages to `app` (called once by `serve.main.create_app`)."""
    app.include_router(router)
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="pages-static")

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, exc: SignInRequired) -> Response:
        from urllib.parse import urlencode

        target = f"{root_of(request)}/signin?{urlencode({'next': exc.next_path})}"
        return RedirectResponse(target, status_code=303)

    @app.exception_handler(PageError)
    async def _page_error(request: Request, exc: PageError) -> Response:
        if not _wants_html(request):
            return error_response(exc.status, exc.code, exc.message)
        heading = HEADINGS.get(exc.status, "Something is wrong with that request")
        return render(request, "error.html", {"heading": heading, "message": exc.message},
                      status=exc.status)

    log_open_pages(app.state.settings)
