"""Sign-in for the pages: an API key typed once, then a signed, HttpOnly, SameSite=Strict cookie;
and the CSRF token every form posts back.

The cookie is `<expiry>.<key id>.<nonce>.<HMAC-SHA256>`. Its secret is derived from the
configured API keys (`LEADSCORE_API_KEYS`), so every worker process and a restart accept the
same cookies without another setting, and changing the keys signs everyone out. The key id is
the first 16 hex digits of the key's SHA-256: a cookie of a key since removed is refused. The key
itself is never stored in the cookie or logged. With no keys configured the pages are open (the
server says so at start-up, and `leadscore serve` binds to 127.0.0.1 unless told otherwise).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import HTTPException, Request

from leadscore.config import Settings

log = logging.getLogger("serve")

COOKIE = "leadscore_session"
SESSION_SECONDS = 12 * 3600
MAX_FORM_BYTES = 64 * 1024
_PROCESS_SECRET = secrets.token_bytes(32)  # open pages: CSRF tokens of this process only


class SignInRequired(HTTPException):
    """A page asked for without a valid session: a 303 to /signin?next=<the page>. An
    `HTTPException`, so even an app without the pages' handlers answers with the redirect."""

    def __init__(self, next_path: str) -> None:
        location = "/signin?" + urlencode({"next": next_path})
        super().__init__(303, "sign in first", headers={"Location": location})
        self.next_path = next_path


class PageError(HTTPException):
    """A page's plain error: a status and one line (an HTML page for a browser, the API's JSON
    error shape otherwise). An `HTTPException`: a page catching those sees its `detail`."""

    def __init__(self, status: int, message: str, code: str = "page_error") -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message
        self.code = code


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def keys_required(request: Request) -> bool:
    return bool(request.app.state.key_digests)


def _secret(settings: Settings) -> bytes:
    """The HMAC secret of the cookies: derived from every configured key (sorted, so their
    order in the setting does not matter)."""
    keys = sorted(settings.api_key_list())
    return hmac.new(b"leadscore pages session", "\0".join(keys).encode(),
                    hashlib.sha256).digest()


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _sign(secret: bytes, payload: str) -> str:
    return hmac.new(secret, payload.encode(), hashlib.sha256).hexdigest()


def matching_key(settings: Settings, offered: str) -> str | None:
    """The configured key `offered` is (compared digest to digest, in constant time), or None."""
    supplied = hashlib.sha256(offered.encode()).digest()
    found = None
    for key in settings.api_key_list():
        if hmac.compare_digest(supplied, hashlib.sha256(key.encode()).digest()):
            found = key
    return found


def session_cookie(settings: Settings, key: str, now: float | None = None) -> str:
    """A new session's cookie value for a signed-in `key`."""
    expires = int((now or time.time()) + SESSION_SECONDS)
    payload = f"{expires}.{key_id(key)}.{secrets.token_hex(16)}"
    return f"{payload}.{_sign(_secret(settings), payload)}"


def _session(request: Request) -> str | None:
    """The valid session cookie's nonce, or None (missing, forged, expired, key removed)."""
    value = request.cookies.get(COOKIE)
    if not value:
        return None
    parts = value.split(".")
    if len(parts) != 4:
        return None
    expires, kid, nonce, signature = parts
    settings = _settings(request)
    expected = _sign(_secret(settings), f"{expires}.{kid}.{nonce}")
    if not hmac.compare_digest(expected, signature):
        return None
    if not expires.isdigit() or int(expires) < time.time():
        return None
    if kid not in {key_id(k) for k in settings.api_key_list()}:
        return None
    return nonce


def signed_in(request: Request) -> bool:
    """True when the pages are open (no API keys set) or the request has a valid session."""
    return not keys_required(request) or _session(request) is not None


def safe_next(path: str | None) -> str:
    """Where to go after signing in: a path on this site only (never `//host` or a URL)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


async def require_page_user(request: Request) -> None:
    """FastAPI dependency of every page: not signed in -> 303 to /signin?next=<this page>."""
    if not signed_in(request):
        target = request.url.path
        if request.url.query:
            target += "?" + request.url.query
        raise SignInRequired(target)


def csrf_token(request: Request) -> str:
    """The token a page's forms carry: bound to the session (a new sign-in, a new token); with
    open pages, to this server process."""
    nonce = _session(request) if keys_required(request) else None
    if nonce is not None:
        return _sign(_secret(_settings(request)), f"csrf.{nonce}")
    return hmac.new(_PROCESS_SECRET, b"csrf.open", hashlib.sha256).hexdigest()


def check_csrf(request: Request, token: str) -> None:
    """A posted form's token must be this session's (else 403): a page on another site cannot
    read it, so it cannot post a form as the signed-in user."""
    if not token or not hmac.compare_digest(csrf_token(request), token):
        raise PageError(403, "the form has expired or did not come from this site: reload the "
                             "page and send it again", "csrf_failed")


async def read_form(request: Request) -> dict[str, str]:
    """A posted `application/x-www-form-urlencoded` body as a dict (the last value of a repeated
    field); no multipart parser needed for pages' small forms. Too large: 413."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise PageError(415, "send the form as application/x-www-form-urlencoded",
                        "unsupported_media_type")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise PageError(413, f"the form is larger than {MAX_FORM_BYTES // 1024} KB",
                            "payload_too_large")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise PageError(400, "the form is not UTF-8 text", "invalid_form") from None
    return dict(pairs)


def log_open_pages(settings: Settings) -> None:
    if not settings.api_key_list():
        log.warning("pages are open: LEADSCORE_API_KEYS is not set, anyone who can reach this "
                    "server sees the lead board (leadscore serve binds to 127.0.0.1 unless "
                    "--host says otherwise)")


def cookie_args(request: Request) -> dict[str, Any]:
    """The session cookie's attributes: HttpOnly, SameSite=Strict, Secure over HTTPS."""
    return {"httponly": True, "samesite": "strict", "secure": request.url.scheme == "https",
            "max_age": SESSION_SECONDS, "path": "/"}
