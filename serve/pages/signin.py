"""`/signin` (GET: the form; POST: an API key for a session cookie) and `POST /signout`."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from serve.deps import client_address, key_throttle
from serve.pages.auth import (
    COOKIE,
    SESSION_SECONDS,
    check_csrf,
    cookie_args,
    keys_required,
    matching_key,
    read_form,
    safe_next,
    session_cookie,
    signed_in,
)
from serve.pages.rendering import render, root_of

log = logging.getLogger("serve")

router = APIRouter(include_in_schema=False)


def _form(request: Request, next_path: str, error: str | None = None,
          status: int = 200) -> Response:
    return render(request, "signin.html", {"next": next_path, "error": error,
                                           "hours": SESSION_SECONDS // 3600}, status=status)


@router.get("/signin")
async def signin_form(request: Request) -> Response:
    next_path = safe_next(request.query_params.get("next"))
    if not keys_required(request) or signed_in(request):
        return RedirectResponse(root_of(request) + next_path, status_code=303)
    return _form(request, next_path)


@router.post("/signin")
async def signin(request: Request) -> Response:
    """A configured API key: a session cookie and a 303 to where the reader was going. A wrong
    key: the form again, 401, one plain line (the key is never echoed or logged); past
    MAX_FAILURES wrong keys from one address in a minute, 429 with Retry-After."""
    form = await read_form(request)
    next_path = safe_next(form.get("next"))
    if not keys_required(request):
        return RedirectResponse(root_of(request) + next_path, status_code=303)
    check_csrf(request, form.get("csrf", ""))
    throttle, client = key_throttle(request), client_address(request)
    wait = throttle.wait_seconds(client)
    if wait:
        log.info("page sign-in refused: too many wrong keys from one address")
        refused = _form(request, next_path, f"Too many wrong keys from this address: wait {wait} "
                        "seconds, then try again.", 429)
        refused.headers["Retry-After"] = str(wait)
        return refused
    key = matching_key(request.app.state.settings, form.get("key", "").strip())
    if key is None:
        throttle.failed(client)
        log.info("page sign-in refused: not a configured API key")
        return _form(request, next_path, "That is not one of this server's API keys.", 401)
    throttle.succeeded(client)
    response = RedirectResponse(root_of(request) + next_path, status_code=303)
    response.set_cookie(COOKIE, session_cookie(request.app.state.settings, key),
                        **cookie_args(request))
    return response


@router.post("/signout")
async def signout(request: Request) -> Response:
    """Forget the session (a cross-site post cannot reach here with the cookie: SameSite)."""
    response = RedirectResponse(root_of(request) + "/signin", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response
