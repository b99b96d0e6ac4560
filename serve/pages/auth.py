"""PLACEHOLDER (helper P2's branch): the pages' sign-in session and CSRF token, simple but
working, to be replaced by P1's serve/pages/auth.py at merge. Only these four names are used by
the model page and the score form: `signed_in`, `require_page_user`, `csrf_token`,
`check_csrf`.

The session is an HMAC-signed cookie `leadscore_session`; without API keys the pages are open
and everyone shares the anonymous session. The CSRF token is the HMAC of the session + "csrf".
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import HTTPException, Request

SESSION_COOKIE = "leadscore_session"
ANONYMOUS = "anonymous"


def _secret(request: Request) -> bytes:
    state = request.app.state
    secret: bytes | None = getattr(state, "page_secret", None)
    if secret is None:
        secret = secrets.token_bytes(32)  # per process: sessions end when the server does
        state.page_secret = secret
    return secret


def _sign(request: Request, value: str) -> str:
    return hmac.new(_secret(request), value.encode(), hashlib.sha256).hexdigest()


def session_cookie(request: Request, user: str) -> str:
    """The cookie value for a signed-in `user`: `user.signature`."""
    return f"{user}.{_sign(request, user)}"


def _session(request: Request) -> str | None:
    raw = request.cookies.get(SESSION_COOKIE, "")
    user, _, signature = raw.rpartition(".")
    if user and hmac.compare_digest(signature, _sign(request, user)):
        return user
    return None


def signed_in(request: Request) -> bool:
    return _session(request) is not None


async def require_page_user(request: Request) -> None:
    """Pages need a signed-in user when API keys are configured (else they are open)."""
    settings = request.app.state.settings
    if settings.api_key_list() and not signed_in(request):
        raise HTTPException(303, "sign in first", headers={"Location": "/signin"})


def csrf_token(request: Request) -> str:
    return _sign(request, (_session(request) or ANONYMOUS) + "csrf")


def check_csrf(request: Request, token: str) -> None:
    """403 unless `token` is this session's CSRF token."""
    if not token or not hmac.compare_digest(token, csrf_token(request)):
        raise HTTPException(403, "the form's security token is missing or wrong: reload the "
                            "page and submit it again")
