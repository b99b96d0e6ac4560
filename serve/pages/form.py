"""`/models/{name}/score`: score one lead from a form (GET the form, POST the result).

The form is generated from the served model's own input fields: a category the model knows as a
choice list of its levels, a number as a number input, every field optional (blank = missing,
scored as missing like a field left out of an API request). The POST goes through the API's own
validation and scoring (`serve.routes.score.validate_leads` and `score_payload`), so a lead gets
the same probability, score, tier and reasons here as from `POST /v1/models/{name}/score`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from leadscore.labels import prettify
from leadscore.scoring import ModelBundle
from serve.deps import Loaded
from serve.errors import ApiError
from serve.pages.auth import check_csrf, csrf_token, require_page_user
from serve.pages.model import error_page
from serve.pages.rendering import render as render_page
from serve.routes.score import score_payload, validate_leads

log = logging.getLogger("serve")

form_router = APIRouter(include_in_schema=False, dependencies=[Depends(require_page_user)])

MAX_FORM_BYTES = 64 * 1024  # a form of a few dozen fields is a few kB
CSRF_FIELD = "csrf_token"


@dataclass
class FormField:
    """One input of the form: the lead field's name, its label in words, how it is entered."""

    name: str
    label: str
    kind: str  # "select", "number" or "text"
    choices: list[tuple[str, str]] = field(default_factory=list)  # (value, words)
    step: str = "any"
    low: float | None = None
    high: float | None = None
    value: str = ""  # what the user entered (re-shown after an error or a result)


def form_fields(bundle: ModelBundle) -> list[FormField]:
    """The model's input fields in its own order (the lead id left out: nothing to score)."""
    kinds = bundle.input_types()
    words = dict(zip(bundle.sources, bundle.words_, strict=True))
    levels: dict[str, tuple[str, ...]] = {
        f.source: f.levels for f in bundle.builder.features_
        if f.kind == "categorical" and not f.derive and f.levels
    }
    whole = set(bundle.meta.get("whole_number_fields") or [])
    sensitive = bundle.builder.sensitive_inputs_
    out = []
    for name in bundle.inputs:
        if name == bundle.id_column:
            continue
        said = words.get(name)
        label = said.label if said is not None else prettify(name)
        if kinds.get(name) == "numeric":
            low, high = bundle.bounds_.get(name, (None, None))
            out.append(FormField(name, label, "number", step="1" if name in whole else "any",
                                 low=_finite_or_none(low), high=_finite_or_none(high)))
        elif name in levels and name not in sensitive:
            value_words = said.values if said is not None else {}
            choices = [(level, value_words.get(level, level)) for level in levels[name]]
            out.append(FormField(name, label, "select", choices))
        else:  # a derived field (email domain, job title words): typed as text
            out.append(FormField(name, label, "text"))
    return out


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class FormError(ValueError):
    """A value the form cannot take, with a message naming the field in words."""


def read_lead(fields: list[FormField], submitted: dict[str, str]) -> dict[str, Any]:
    """The lead the form describes: blank fields left out (missing), numbers parsed; a value
    that is not a finite number raises FormError naming the field (never quoting the value)."""
    lead: dict[str, Any] = {}
    for item in fields:
        raw = submitted.get(item.name, "").strip()
        item.value = raw
        if not raw:
            continue
        if item.kind == "number":
            try:
                number = float(raw)
            except ValueError:
                raise FormError(f"{item.label} ({item.name}) must be a number, or left "
                                "blank") from None
            if not math.isfinite(number):
                raise FormError(f"{item.label} ({item.name}) must be a finite number")
            lead[item.name] = number
        elif item.kind == "select" and raw not in {value for value, _ in item.choices}:
            raise FormError(f"{item.label} ({item.name}) must be one of the listed choices")
        else:
            lead[item.name] = raw
    return lead


async def read_form(request: Request) -> dict[str, str]:
    """The urlencoded body (the form's only encoding), capped at MAX_FORM_BYTES; a repeated
    field keeps its first value."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise HTTPException(415, "send the form as application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(413, f"form body exceeds {MAX_FORM_BYTES} bytes")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        raise HTTPException(400, "the form body is not UTF-8") from None
    out: dict[str, str] = {}
    for key, value in pairs:
        out.setdefault(key, value)
    return out


def _snapshot(request: Request, name: str) -> Loaded:
    return request.app.state.models.get(name).holder.snapshot()  # type: ignore[no-any-return]


def render(request: Request, loaded: Loaded, fields: list[FormField], *,
           result: dict[str, Any] | None = None, error: str | None = None,
           status: int = 200) -> Response:
    bundle = loaded.bundle
    context = {
        "name": bundle.name, "version": bundle.version, "fields": fields,
        "csrf_field": CSRF_FIELD, "csrf": csrf_token(request), "result": result,
        "probability_repr": repr(result["probability"]) if result else None,
        "error": error,
    }
    return render_page(request, "form.html", context, status=status)


@form_router.get("/models/{name}/score", response_class=HTMLResponse)
async def score_form(request: Request, name: str) -> Response:
    """The empty form."""
    try:
        loaded = _snapshot(request, name)
    except ApiError as exc:
        return error_page(request, exc)
    return render(request, loaded, form_fields(loaded.bundle))


@form_router.post("/models/{name}/score", response_class=HTMLResponse)
async def score_submitted(request: Request, name: str) -> Response:
    """The form's lead scored by the API's own code; 422 with the form and a plain error for a
    value it cannot take; 403 without this session's CSRF token."""
    try:
        loaded = _snapshot(request, name)
    except ApiError as exc:
        return error_page(request, exc)
    submitted = await read_form(request)
    fields = form_fields(loaded.bundle)
    try:
        check_csrf(request, submitted.get(CSRF_FIELD, ""))
    except HTTPException as exc:
        return render(request, loaded, fields, error=str(exc.detail), status=exc.status_code)
    try:
        lead = read_lead(fields, submitted)
        records = validate_leads(loaded, [lead])
    except FormError as exc:
        return render(request, loaded, fields, error=str(exc), status=422)
    except ApiError as exc:  # the API's own checks (bounds): "lead 0: field ..." without "lead 0"
        message = exc.message.replace("lead 0: ", "")
        return render(request, loaded, fields, error=message, status=exc.status)
    k = request.app.state.settings.default_reasons
    payload = score_payload(loaded, records, k)  # one lead: inline, as the API scores it
    return render(request, loaded, fields, result=payload["results"][0])
