"""Examples for the OpenAPI schema: one request and response per route, so `/docs` shows what to
send and what comes back. The scoring example is the served model's own answer for a lead built
from its fields (real numbers, labels and reason texts), not a hand-written one."""

from __future__ import annotations

import logging
from typing import Any

from leadscore.errors import LeadscoreError
from leadscore.scoring import ModelBundle, score_records
from serve.schemas import categorical_levels

log = logging.getLogger("serve")

EXAMPLE_ID = "L-1001"
# answers of the routes whose shape does not depend on the model
STATIC_EXAMPLES: dict[tuple[str, str], Any] = {
    ("/healthz", "get"): {"status": "ok"},
    ("/readyz", "get"): {"status": "ready", "models": {"lead-synthetic": "3"},
                         "model": "lead-synthetic", "version": "3"},
    ("/v1/admin/reload", "post"): {"status": "reloaded", "model": "lead-synthetic",
                                   "version": "4", "previous_version": "3"},
    ("/v1/leads/{lead_id}/history", "get"): {
        "lead_id": EXAMPLE_ID, "model": "lead-synthetic",
        "scorings": [
            {"scored_at": "2026-11-01T02:00:00+00:00", "model_version": "3",
             "probability": 0.21, "score": 21, "tier": "C"},
            {"scored_at": "2026-11-08T02:00:00+00:00", "model_version": "4",
             "probability": 0.34, "score": 34, "tier": "B"},
        ],
        "trend": "rising",
        "trend_rule": "see the response's own trend_rule",
        "why_changed": {
            "from": {"scored_at": "2026-11-01T02:00:00+00:00", "model_version": "3",
                     "score": 21},
            "to": {"scored_at": "2026-11-08T02:00:00+00:00", "model_version": "4",
                   "score": 34},
            "score_change": 13,
            "data": [{"field": "activity.demo_request.14d", "change": 9.5}],
            "model": [{"field": "industry", "change": 3.0}],
            "baseline_change": 0.4, "rounding": 0.1,
            "rule": "see the response's own rule",
        },
    },
}
METRICS_EXAMPLE = (
    "# HELP leadscore_scored_leads_total Leads scored, by model and tier.\n"
    "# TYPE leadscore_scored_leads_total counter\n"
    'leadscore_scored_leads_total{model="lead-synthetic",tier="A"} 42.0\n'
)


def example_lead(bundle: ModelBundle | None) -> dict[str, Any]:
    """A lead with every field of the model: a known level of each categorical field, the middle
    of each numeric field's training range."""
    if bundle is None:
        return {"lead_id": EXAMPLE_ID, "industry": "software", "country": "GB"}
    levels = categorical_levels(bundle)
    ranges = bundle.meta.get("ranges") or {}
    lead: dict[str, Any] = {bundle.id_column: EXAMPLE_ID}
    for name, kind in bundle.input_types().items():
        if name == bundle.id_column or name in bundle.builder.sensitive_inputs_:
            continue
        if kind == "numeric":
            low, high = ranges.get(name, (0.0, 2.0))
            middle = (float(low) + float(high)) / 2
            lead[name] = round(middle) if float(low).is_integer() else round(middle, 2)
        elif levels.get(name):
            known = levels[name]
            lead[name] = known[len(known) // 2]
    return lead


def example_results(bundle: ModelBundle, lead: dict[str, Any]) -> dict[str, Any] | None:
    """The model's answer for `lead` with 3 reasons, as `POST /v1/score` returns it."""
    try:
        scores, ids = score_records(bundle, [lead], 3)
    except (LeadscoreError, ValueError, TypeError):
        log.debug("no scoring example for the schema", exc_info=True)
        return None
    tier = str(scores.tier[0])
    return {"results": [{
        "id": EXAMPLE_ID,
        "probability": float(scores.probability[0]),
        "score": int(scores.score[0]),
        "tier": tier,
        "tier_label": bundle.tier_labels([tier])[0],
        "percentile": int(scores.percentile[0]),
        "reasons": scores.reasons[0] if scores.reasons else [],
        "warnings": scores.warnings[0] if scores.warnings else [],
        "model_name": bundle.name,
        "model_version": bundle.version,
    }]}


def _json_content(operation: dict[str, Any], status: str = "200") -> dict[str, Any]:
    response = operation.setdefault("responses", {}).setdefault(status, {})
    content: dict[str, Any] = response.setdefault("content", {})
    return content.setdefault("application/json", {})  # type: ignore[no-any-return]


def add_examples(schema: dict[str, Any], bundle: ModelBundle | None) -> None:
    """Put an example on every route of `schema` (in place): requests and answers for scoring
    from `bundle` (None: a generic lead), the fixed shapes for the rest."""
    paths: dict[str, dict[str, Any]] = schema.get("paths", {})
    lead = example_lead(bundle)
    answer = example_results(bundle, lead) if bundle is not None else None
    for path in ("/v1/score", "/v1/models/{name}/score"):
        operation = paths.get(path, {}).get("post")
        if operation is None:
            continue
        body = operation.setdefault("requestBody", {}).setdefault("content", {})
        body.setdefault("application/json", {})["example"] = {"leads": [lead]}
        if answer is not None:
            _json_content(operation)["example"] = answer
    for (path, method), example in STATIC_EXAMPLES.items():
        operation = paths.get(path, {}).get(method)
        if operation is not None:
            _json_content(operation)["example"] = example
    metrics = paths.get("/metrics", {}).get("get")
    if metrics is not None:
        response = metrics.setdefault("responses", {}).setdefault("200", {})
        response["content"] = {"text/plain": {"example": METRICS_EXAMPLE}}
    info = _model_example(bundle)
    for path in ("/v1/model", "/v1/models/{name}"):
        operation = paths.get(path, {}).get("get")
        if operation is not None:
            _json_content(operation)["example"] = info
    listing = paths.get("/v1/models", {}).get("get")
    if listing is not None:
        _json_content(listing)["example"] = {"default": info["name"], "models": [info]}


def _model_example(bundle: ModelBundle | None) -> dict[str, Any]:
    """`GET /v1/model`'s answer for `bundle` (or a generic model)."""
    if bundle is None:
        return {"name": "lead-synthetic", "version": "3", "loaded": True, "default": True,
                "features": {"industry": "categorical", "country": "categorical"},
                "tier_words": {"A": "hot", "B": "warm", "C": "cool", "D": "cold"}}
    meta = bundle.meta
    return {
        "name": bundle.name,
        "version": bundle.version,
        "loaded": True,
        "default": True,
        "trained_at": meta.get("trained_at"),
        "dataset": meta.get("dataset"),
        "tiers": meta.get("tiers") or {},
        "tier_words": bundle.tier_words_,
        "id_field": bundle.id_column,
        "features": bundle.input_types(),
        "labels": {s: w.label for s, w in zip(bundle.sources, bundle.words_, strict=True)},
    }
