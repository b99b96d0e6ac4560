"""One JSON shape for every error: {"error": {"code", "message", "details"}}. Submitted values are
never echoed back (a value may be an email address), in a response or in a log line."""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from leadscore.errors import LeadscoreError

log = logging.getLogger("serve")

# a submitted key is named back only when it looks like a field name, not like data someone keyed
# a record by (an email address, a phone number, a sentence)
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_. \-]{0,63}")


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.headers = headers


def error_body(code: str, message: str, details: list[dict[str, Any]] | None = None) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message, "details": details or []}})


def error_response(
    status: int, code: str, message: str, details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    return Response(error_body(code, message, details), status_code=status, headers=headers,
                    media_type="application/json")


def safe_name(name: object) -> str:
    """A submitted field name, or a placeholder when it does not look like one."""
    text = str(name)
    return text if _FIELD_NAME.fullmatch(text) and "@" not in text else "(redacted name)"


def _safe_details(errors: list[Any]) -> list[dict[str, Any]]:
    """Where and what kind of problem; never the input, nor pydantic's message about it."""
    return [
        {"loc": [safe_name(p) if isinstance(p, str) else p for p in e.get("loc", ())],
         "type": str(e.get("type", ""))}
        for e in errors
    ]


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        details = _safe_details(list(exc.errors()))
        where = ", ".join(".".join(str(p) for p in d["loc"]) for d in details[:5])
        return error_response(422, "invalid_request", f"request parameters are invalid: {where}",
                              details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(exc.headers) if exc.headers else None
        return error_response(exc.status_code, code, str(exc.detail), headers=headers)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> Response:
        # the client hung up mid-body: nobody reads this answer, but the access log and the
        # metrics record 499 (nginx's "client closed request"), not a 500 and a stack
        return error_response(499, "client_closed_request", "the client closed the request")

    @app.exception_handler(LeadscoreError)
    async def _leadscore(request: Request, exc: LeadscoreError) -> Response:
        # leadscore's messages name files, columns and keys, never values (see leadscore.errors)
        return error_response(422, "invalid_lead", str(exc))
