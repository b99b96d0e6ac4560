"""POST /v1/score: leads in, probability, score, tier, percentile and reasons out.

The body is read with a size cap before any JSON parsing, validated per lead against the
model's own fields, then scored in a worker thread by the same `scoring` code batch uses.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from leadscore.scoring import score_records
from serve.deps import Authorized, HolderDep, Loaded, SettingsDep
from serve.errors import ApiError
from serve.schemas import ErrorResponse, ScoreResponse

router = APIRouter(tags=["scoring"])

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        400: "Malformed JSON",
        401: "Missing or invalid API key",
        413: "Too many leads or body too large",
        422: "A lead has a wrong type or an unknown field",
        503: "No model loaded",
    }.items()
}


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing it as soon as it passes `limit` bytes (before any parsing)."""
    declared = request.headers.get("content-length")
    too_big = ApiError(413, "body_too_large", f"request body exceeds {limit} bytes")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def parse_leads(body: bytes, max_batch: int) -> list[Any]:
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "malformed_json", "request body is not valid JSON") from None
    if not isinstance(payload, dict) or "leads" not in payload:
        raise ApiError(422, "invalid_request", 'body must be an object {"leads": [...]}',
                       [{"loc": ["leads"], "type": "missing"}])
    unknown = sorted(set(payload) - {"leads"})
    if unknown:
        raise ApiError(422, "unknown_field", f"unknown top-level field(s): {unknown}",
                       [{"loc": [name], "type": "extra_forbidden"} for name in unknown])
    leads = payload["leads"]
    if not isinstance(leads, list):
        raise ApiError(422, "invalid_request", '"leads" must be a list of lead objects',
                       [{"loc": ["leads"], "type": "list_type"}])
    if not leads:
        raise ApiError(422, "empty_batch", '"leads" is empty: send 1 to %d leads' % max_batch,
                       [{"loc": ["leads"], "type": "too_short"}])
    if len(leads) > max_batch:
        raise ApiError(413, "too_many_leads",
                       f"{len(leads)} leads in one request; the limit is {max_batch}",
                       [{"loc": ["leads"], "type": "too_long", "limit": max_batch}])
    return leads


def validate_leads(loaded: Loaded, leads: list[Any]) -> list[dict[str, Any]]:
    """Typed lead dicts keyed by field name; errors name the lead's index and the field only."""
    try:
        models = loaded.leads.validate_python(leads)
    except ValidationError as exc:
        details, parts = [], []
        for error in exc.errors(include_input=False, include_url=False):
            loc = list(error["loc"])
            index = loc[0] if loc and isinstance(loc[0], int) else None
            field = ".".join(str(p) for p in loc[1:] if not isinstance(p, int) or p != index)
            field = field.split(".")[0] if field else ""
            kind = error["type"]
            if kind == "extra_forbidden":
                text = f"lead {index}: unknown field {field!r}"
            elif kind in {"model_type", "dict_type"}:
                text = f"lead {index}: must be an object of fields"
            else:
                text = f"lead {index}: field {field!r} {_expectation(kind)}"
            parts.append(text)
            details.append({"lead": index, "field": field or None, "type": kind})
        code = "unknown_field" if all(d["type"] == "extra_forbidden" for d in details) else "invalid_lead"
        message = "; ".join(dict.fromkeys(parts[:10])) + (" …" if len(parts) > 10 else "")
        raise ApiError(422, code, message, details) from None
    return [model.model_dump(by_alias=True, exclude_none=True) for model in models]


def _expectation(kind: str) -> str:
    if kind.startswith("float") or kind.startswith("finite"):
        return "should be a number"
    if kind.startswith("string") or kind in {"int_type", "bool_type", "int_parsing"}:
        return "should be text or a number"
    return f"is invalid ({kind})"


def score_payload(loaded: Loaded, leads: list[dict[str, Any]], reasons: int) -> dict[str, Any]:
    bundle = loaded.bundle
    scores, ids = score_records(bundle, leads, reasons)
    results = []
    for i in range(len(leads)):
        results.append(
            {
                "id": None if ids[i] is None else str(ids[i]),
                "probability": float(scores.probability[i]),
                "score": int(scores.score[i]),
                "tier": str(scores.tier[i]),
                "percentile": int(scores.percentile[i]),
                "reasons": scores.reasons[i] if scores.reasons is not None else [],
                "model_name": bundle.name,
                "model_version": bundle.version,
            }
        )
    return {"results": results}


@router.post(
    "/v1/score",
    response_model=ScoreResponse,
    responses=ERRORS,
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/ScoreRequest"}}}}},
)
async def score(
    request: Request,
    holder: HolderDep,
    settings: SettingsDep,
    _: Authorized,
    reasons: Annotated[int | None, Query(ge=0, le=10, description="Top reasons per lead.")] = None,
) -> JSONResponse:
    """Score 1 to `max_batch` leads. Missing fields are scored as missing; results keep the
    request's order and echo each lead's id."""
    body = await read_body(request, settings.max_body_bytes)
    leads = parse_leads(body, settings.max_batch)
    loaded = holder.snapshot()  # this request finishes on this model, whatever reloads meanwhile
    records = validate_leads(loaded, leads)
    k = settings.default_reasons if reasons is None else reasons
    if len(records) <= 8:  # microseconds of work: a thread hop would cost more than it saves
        payload = score_payload(loaded, records, k)
    else:
        payload = await run_in_threadpool(score_payload, loaded, records, k)
    return JSONResponse(payload)
