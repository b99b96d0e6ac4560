"""POST /v1/score: leads in, probability, score, tier, percentile and reasons out.

The body is read with a size cap before any JSON parsing, validated per lead against the
model's own fields, then scored by the same `scoring.score_records` batch uses. A few leads
score inline (a thread hop would cost more); bigger batches go to a worker thread.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from anyio import to_thread
from fastapi import APIRouter, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from leadscore.ranges import bound_reason, find_out_of_bounds
from leadscore.scoring import score_records
from serve.deps import Loaded, RequestHead, scoring_context
from serve.errors import ApiError, safe_name
from serve.recorder import ScoreRecorder
from serve.schemas import ID_MAX, ID_MIN, ErrorResponse, ScoreResponse


class DirectRoute(APIRoute):
    """A route documented like any other (its OpenAPI entry comes from the decorator) whose
    endpoint gets the `Request` as is: FastAPI's per-request dependency solving, which parses
    the query string and inspects the body for an endpoint that reads both itself, is skipped
    (~15 µs a request). Exception handlers and middleware apply as usual."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint
        return endpoint


router = APIRouter(tags=["scoring"], route_class=DirectRoute)

# Small requests are scored on the event loop, where a thread hop (a wake-up of a worker, a
# hand-over of the GIL and back: ~100 µs of CPU on a busy 2-core machine) would cost more than it
# frees: up to INLINE_LEADS leads without reasons (tens of µs), and up to INLINE_REASON_LEADS
# with reasons (TreeSHAP, ~0.2-0.5 ms a lead, which releases the GIL anyway). Bigger batches go to
# a worker thread (at most one per core, see main.SCORING_THREADS), so the loop keeps serving.
INLINE_LEADS = 8
INLINE_REASON_LEADS = 1
MAX_LISTED = 10  # problems spelled out in an error message; `details` lists them all
MAX_REASONS = 10

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        400: "Malformed JSON",
        401: "Missing or invalid API key",
        413: "Too many leads or body too large",
        415: "The body is not declared as JSON",
        422: "A lead has a wrong type, an unknown field or a value outside the model's bounds, "
        "or the list is empty",
        503: "No model loaded",
    }.items()
}


# RFC 6838's type/subtype names: what a client declared is echoed only when it is one of these
MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,62}/[a-z0-9][a-z0-9!#$&^_.+-]{0,62}")


def check_json(head: RequestHead) -> None:
    """A body declared as anything but JSON is refused (415) before it is read: a form post or
    text sent by mistake gets told what to send instead of a confusing parse error. No
    Content-Type at all is read as JSON (curl --data-binary, many webhooks)."""
    declared = head.content_type
    if declared is None or declared == b"application/json":
        return
    kind = declared.split(b";", 1)[0].strip().lower().decode("latin-1")
    if kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json")):
        return
    shown = kind if MEDIA_TYPE.fullmatch(kind) else "(redacted)"  # a media type, not free text
    raise ApiError(415, "unsupported_media_type",
                   "the body must be JSON: send 'Content-Type: application/json'",
                   [{"content_type": shown}])


async def read_body(request: Request, head: RequestHead, limit: int) -> bytes:
    """The body, refusing it as soon as it passes `limit` bytes (before any parsing): at once
    from a declared Content-Length, else while a chunked body streams in.

    Read from the ASGI messages directly, as `Request.stream()` does without its async
    generator (a one-lead body is one message)."""
    check_json(head)
    declared = head.content_length
    if declared is not None and _is_count(declared) and int(declared) > limit:
        raise _too_large(limit)
    receive = request.receive
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        if not message.get("more_body", False):
            if not chunks:
                return chunk
            chunks.append(chunk)
            return b"".join(chunks)
        chunks.append(chunk)


def _is_count(text: str | bytes) -> bool:
    """ASCII digits only (`"²".isdigit()` is true but `int("²")` fails), at most 18 of them."""
    return 0 < len(text) <= 18 and text.isascii() and text.isdigit()


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"request body exceeds the limit of {limit} bytes",
                    [{"limit_bytes": limit}])


def parse_leads(body: bytes, max_batch: int, ignore_unknown: bool = False) -> list[Any]:
    """The `leads` list of a JSON body, checked for shape and size (not yet for field types)."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:  # bad syntax or UTF-8, NaN, absurd numbers or nesting
        raise ApiError(400, "malformed_json", "request body is not valid JSON") from None
    if not isinstance(payload, dict) or "leads" not in payload:
        raise ApiError(422, "invalid_request", 'body must be an object {"leads": [...]}',
                       [{"loc": ["leads"], "type": "missing"}])
    unknown = [name for name in payload if name != "leads"]
    if unknown and not ignore_unknown:
        names = [safe_name(name) for name in unknown]
        raise ApiError(422, "unknown_field", f"unknown top-level field(s): {', '.join(names)}",
                       [{"loc": [name], "type": "extra_forbidden"} for name in names])
    leads = payload["leads"]
    if not isinstance(leads, list):
        raise ApiError(422, "invalid_request", '"leads" must be a list of lead objects',
                       [{"loc": ["leads"], "type": "list_type"}])
    if not leads:
        raise ApiError(422, "empty_batch", f'"leads" is empty: send 1 to {max_batch} leads',
                       [{"loc": ["leads"], "type": "too_short", "min": 1}])
    if len(leads) > max_batch:
        raise ApiError(413, "too_many_leads",
                       f"{len(leads)} leads in one request; the limit is {max_batch}",
                       [{"loc": ["leads"], "type": "too_long", "limit": max_batch}])
    return leads


def validate_leads(loaded: Loaded, leads: list[Any]) -> list[dict[str, Any]]:
    """Typed lead dicts keyed by field name; errors name the lead's index and the field only."""
    try:
        records: list[dict[str, Any]] = loaded.leads.validate_python(leads)
    except ValidationError as exc:
        raise _invalid(loaded, exc) from None
    if loaded.bundle.bounds_:
        _refuse_out_of_bounds(loaded, records)
    return records


def _refuse_out_of_bounds(loaded: Loaded, records: list[dict[str, Any]]) -> None:
    """422 naming each lead and field outside the spec's hard bounds (the bounds come from the
    spec, so they may be quoted; the lead's value never is)."""
    bounds = loaded.bundle.bounds_
    problems = find_out_of_bounds(bounds, records)
    if not problems:
        return
    parts = [f"lead {index}: field {bound_reason(name, *bounds[name])}"
             for index, name in problems]
    more = len(parts) - MAX_LISTED
    message = "; ".join(parts[:MAX_LISTED]) + (f"; and {more} more" if more > 0 else "")
    raise ApiError(422, "out_of_bounds", message,
                   [{"lead": index, "field": name, "type": "out_of_bounds"}
                    for index, name in problems])


def _invalid(loaded: Loaded, exc: ValidationError) -> ApiError:
    kinds = loaded.bundle.input_types()
    id_field = loaded.bundle.id_column
    problems: dict[tuple[int | None, str | None], str] = {}
    for error in exc.errors(include_input=False, include_url=False, include_context=False):
        loc = error["loc"]
        index = loc[0] if loc and isinstance(loc[0], int) else None
        field = safe_name(loc[1]) if len(loc) > 1 else None
        problems.setdefault((index, field), error["type"])  # a union fails once per member
    details, parts = [], []
    for (index, field), kind in problems.items():
        details.append({"lead": index, "field": field, "type": kind})
        if kind == "extra_forbidden":
            parts.append(f"lead {index}: unknown field {field!r}")
        elif field is None:
            parts.append(f"lead {index}: must be an object of fields")
        elif field == id_field:
            parts.append(f"lead {index}: field {field!r} should be text or a whole number from "
                         f"{ID_MIN} to {ID_MAX} (send bigger ids as text)")
        elif kinds.get(field) == "numeric":
            parts.append(f"lead {index}: field {field!r} should be a finite number")
        else:
            parts.append(f"lead {index}: field {field!r} should be text, a number or a boolean")
    unknown_only = all(d["type"] == "extra_forbidden" for d in details)
    code = "unknown_field" if unknown_only else "invalid_lead"
    more = len(parts) - MAX_LISTED
    message = "; ".join(parts[:MAX_LISTED]) + (f"; and {more} more" if more > 0 else "")
    return ApiError(422, code, message, details)


def score_payload(loaded: Loaded, leads: list[dict[str, Any]], reasons: int,
                  recorder: ScoreRecorder | None = None) -> dict[str, Any]:
    bundle = loaded.bundle
    scores, ids = score_records(bundle, leads, reasons)
    name, version = bundle.name, bundle.version
    if recorder is not None:
        recorder.add(name, version, ids, scores)
    probability = scores.probability.tolist()
    score = scores.score.tolist()
    tier = scores.tier.tolist()
    tier_label = bundle.tier_labels(tier)
    percentile = scores.percentile.tolist()
    explained = scores.reasons
    warnings = scores.warnings
    results = [
        {
            "id": None if ids[i] is None else str(ids[i]),
            "probability": probability[i],
            "score": score[i],
            "tier": tier[i],
            "tier_label": tier_label[i],
            "percentile": percentile[i],
            "reasons": explained[i] if explained is not None else [],
            "warnings": warnings[i],
            "model_name": name,
            "model_version": version,
        }
        for i in range(len(leads))
    ]
    return {"results": results}


NAME_PARAMETER = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "A served model's name (`GET /v1/models` lists them).",
    "schema": {"type": "string"},
}

REASONS_PARAMETER = {
    "name": "reasons",
    "in": "query",
    "required": False,
    "description": "Reasons per lead and direction, 0 to 10 (default 3, "
    "`LEADSCORE_DEFAULT_REASONS`): up to k fields that raised the score, then up to k that "
    "lowered it, so at most 2k reasons a lead; 0 for none (fastest).",
    "schema": {"type": "integer", "minimum": 0, "maximum": MAX_REASONS},
}


def reasons_param(request: Request, default: int) -> int:
    """`?reasons=`, read by hand: FastAPI's own query and dependency machinery costs ~30 µs a
    request, a sixth of a single-lead request (see benchmarks/api.py). The usual query strings
    (none, or just `reasons=0` to `reasons=10`) are looked up as raw bytes; anything else
    (escapes, other parameters, repeats, out-of-range values) goes through Starlette's parser
    and the range check."""
    query: bytes = request.scope.get("query_string", b"")
    if not query:
        return default
    known = PLAIN_REASONS.get(query)
    if known is not None:
        return known
    raw = request.query_params.get("reasons")
    if raw is None:
        return default
    return _reasons_value(raw)


# the query strings clients send (`reasons=0` .. `reasons=10`), looked up rather than parsed
PLAIN_REASONS = {f"reasons={k}".encode(): k for k in range(MAX_REASONS + 1)}


def _reasons_value(raw: str) -> int:
    text = raw.strip()  # (str.strip takes more than int() does: "0\x1f" is 0 here)
    value = int(text) if _is_count(text) else -1
    if not 0 <= value <= MAX_REASONS:
        raise ApiError(422, "invalid_request",
                       f"request parameters are invalid: reasons must be 0 to {MAX_REASONS}",
                       [{"loc": ["query", "reasons"], "type": "int_range"}])
    return value


@router.post(
    "/v1/score",
    response_model=ScoreResponse,
    responses=ERRORS,
    openapi_extra={
        "parameters": [REASONS_PARAMETER],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "$ref": "#/components/schemas/ScoreRequest"}}}},
    },
)
async def score(request: Request) -> Response:
    """Score 1 to `max_batch` leads with the default model (`LEADSCORE_DEFAULT_MODEL`, or the
    only one served). Missing fields are scored as missing; results keep the request's order
    and echo each lead's id."""
    return await score_with(request, None)


@router.post(
    "/v1/models/{name}/score",
    response_model=ScoreResponse,
    responses={**ERRORS, 404: {"model": ErrorResponse, "description": "No such model served"}},
    openapi_extra={
        "parameters": [NAME_PARAMETER, REASONS_PARAMETER],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "$ref": "#/components/schemas/AnyScoreRequest"}}}},
    },
)
async def score_model(request: Request) -> Response:
    """Score 1 to `max_batch` leads with the named model (its fields: `GET /v1/models/{name}`).
    """
    return await score_with(request, request.path_params["name"])


async def score_with(request: Request, name: str | None) -> Response:
    head = RequestHead(request.scope["headers"])
    context = scoring_context(request, head.keys)  # auth first: 401 before anything is read
    settings = context.settings
    k = reasons_param(request, settings.default_reasons)
    served = context.models.default_served() if name is None else context.models.get(name)
    body = await read_body(request, head, settings.max_body_bytes)
    leads = parse_leads(body, settings.max_batch, settings.ignore_unknown_fields)
    loaded = served.holder.snapshot()  # this request finishes on this model, whatever reloads
    records = validate_leads(loaded, leads)
    recorder = request.app.state.recorder
    if len(records) <= (INLINE_LEADS if k == 0 else INLINE_REASON_LEADS):
        payload = score_payload(loaded, records, k, recorder)
    else:
        payload = await to_thread.run_sync(score_payload, loaded, records, k, recorder,
                                           limiter=context.limiter)
    context.metrics.scored(served.name, [r["tier"] for r in payload["results"]])
    return Response(orjson.dumps(payload), media_type="application/json")
