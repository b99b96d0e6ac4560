"""`GET /leads/{id}`: one lead's page: its latest score in words, the reasons raising and lowering
it, its score history as an inline SVG chart (drawn here, no chart library), why its score last
changed, and its fields as the model saw them."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from leadscore.board import lead_fields, stored_reasons
from leadscore.errors import DataError, ModelError
from leadscore.history import lead_history
from leadscore.labels import chance_text
from leadscore.scoring import ModelBundle
from leadscore.store import ScoreStore
from serve.pages.auth import PageError, require_page_user
from serve.pages.board import board_of, choose_model
from serve.pages.bundles import BundleFor, bundle_finder
from serve.pages.rendering import render

log = logging.getLogger("serve")

router = APIRouter(include_in_schema=False, dependencies=[Depends(require_page_user)])

REASONS = 5  # raising and lowering reasons shown, each
WHY_SHOWN = 8  # parts of a score change shown by name; the rest add up in one line
# the history chart, in SVG user units
CHART = {"width": 640, "height": 240, "left": 40, "right": 16, "top": 16, "bottom": 36}
# one colour a model version (the legend names them), colour-blind safe (Okabe-Ito)
VERSION_COLOURS = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000"]


def history_chart(scorings: list[dict[str, Any]]) -> dict[str, Any]:
    """The points of the score history (x by time, y by score 0-100), the line through them,
    the gridlines and the legend of model versions, in SVG coordinates."""
    c = CHART
    x0, x1 = c["left"], c["width"] - c["right"]
    y0, y1 = c["height"] - c["bottom"], c["top"]
    times = [datetime.fromisoformat(s["scored_at"]).timestamp() for s in scorings]
    first, last = min(times), max(times)
    versions = list(dict.fromkeys(s["model_version"] for s in scorings))
    colour = {v: VERSION_COLOURS[i % len(VERSION_COLOURS)] for i, v in enumerate(versions)}
    points = []
    for i, (s, t) in enumerate(zip(scorings, times, strict=True)):
        if last > first:
            x = x0 + (x1 - x0) * (t - first) / (last - first)
        else:
            x = x0 + (x1 - x0) * ((i + 1) / (len(scorings) + 1))
        y = y0 - (y0 - y1) * s["score"] / 100.0
        points.append({"x": round(x, 1), "y": round(y, 1), "score": s["score"],
                       "version": s["model_version"], "colour": colour[s["model_version"]],
                       "date": s["scored_at"][:10], "when": s["scored_at"]})
    # date labels: every point when few, else the first, the last and some between
    step = max(1, len(points) // 6)
    labelled = {0, len(points) - 1, *range(0, len(points), step)}
    for i, p in enumerate(points):
        p["label_date"] = i in labelled
        # the first and last dates lean inwards: never cut at the chart's edges
        p["anchor"] = ("start" if p["x"] <= x0 + 30 else "end" if p["x"] >= x1 - 30
                       else "middle")
    grid = [{"y": round(y0 - (y0 - y1) * v / 100.0, 1), "value": v} for v in (0, 25, 50, 75, 100)]
    return {**c, "x0": x0, "x1": x1, "y0": y0, "y1": y1, "points": points, "grid": grid,
            "line": " ".join(f"{p['x']},{p['y']}" for p in points),
            "legend": [{"version": v, "colour": colour[v]} for v in versions]}


def why_parts(why: dict[str, Any], labels: dict[str, str]) -> list[dict[str, Any]]:
    """The parts of a score change as table rows, largest first: the `WHY_SHOWN` largest by
    name, the rest in one "other fields" row, then the average lead's move and the rounding;
    they add up to the change."""
    parts = [{"label": labels.get(d["field"], d["field"]), "cause": "the lead's data",
              "change": d["change"]} for d in why["data"]]
    parts += [{"label": labels.get(m["field"], m["field"]), "cause": "the model",
               "change": m["change"]} for m in why["model"]]
    parts.sort(key=lambda p: -abs(p["change"]))
    shown, rest = parts[:WHY_SHOWN], parts[WHY_SHOWN:]
    if rest:
        causes = {p["cause"] for p in rest}
        shown.append({"label": f"{len(rest)} other fields",
                      "cause": causes.pop() if len(causes) == 1 else "the lead's data and the "
                      "model", "change": round(sum(p["change"] for p in rest), 2)})
    if why["baseline_change"]:
        shown.append({"label": "The average lead's score", "cause": "the model",
                      "change": why["baseline_change"]})
    if why["rounding"]:
        shown.append({"label": "Rounding to whole points", "cause": "",
                      "change": why["rounding"]})
    return shown


def _raising(bundle_for: BundleFor) -> Any:
    """`bundle_for` as `history.lead_history` wants it: a version it cannot load raises."""
    def strict(version: str) -> ModelBundle:
        bundle = bundle_for(version)
        if bundle is None:
            raise ModelError(f"model version {version} cannot be loaded here to explain it")
        return bundle
    return strict


class _ReadOnce(ScoreStore):
    """The store, a lead's rows read once per page: `lead_history` and the page both want the
    last scorings with their features."""

    def __init__(self, root: Any) -> None:
        super().__init__(root)
        self._read: dict[tuple[str, str, int | None], Any] = {}

    def lead(self, model: str, lead_id: str, with_features: int | None = None) -> Any:
        key = (model, lead_id, with_features)
        if key not in self._read:
            self._read[key] = super().lead(model, lead_id, with_features)
        return self._read[key]


def lead_view(store: ScoreStore, model: str, lead_id: str, bundle_for: BundleFor
              ) -> dict[str, Any]:
    """What the lead page shows (in a worker thread: the store, TreeSHAP)."""
    store = _ReadOnce(store.root)
    history = lead_history(store, model, lead_id, _raising(bundle_for))
    latest = history["scorings"][-1]
    bundle = bundle_for(latest["model_version"])
    reasons: list[dict[str, Any]] | None = None
    fields: list[dict[str, str]] | None = None
    labels: dict[str, str] = {}
    tier_word = latest["tier"]
    if bundle is not None:
        last = store.lead(model, lead_id, with_features=2).to_pylist()[-1]
        features = last["features"]
        labels = {s: w.label for s, w in zip(bundle.sources, bundle.words_, strict=True)}
        tier_word = bundle.tier_words_.get(latest["tier"], latest["tier"])
        if len(features) >= len(bundle.builder.features_):
            import numpy as np

            matrix = np.asarray([features], dtype=np.float64)
            reasons = stored_reasons(bundle, matrix, [latest["probability"]], REASONS)[0]
            fields = lead_fields(bundle, features)
    why = history["why_changed"]
    if why and why.get("available"):
        why["parts"] = why_parts(why, labels)
    return {
        "lead_id": lead_id, "model": model, "latest": latest, "tier_word": tier_word,
        "chance": chance_text(latest["probability"]), "trend": history["trend"],
        "trend_rule": history["trend_rule"], "scorings": history["scorings"],
        "chart": history_chart(history["scorings"]), "why": why,
        "raising": [r for r in reasons or [] if r["impact"] > 0],
        "lowering": [r for r in reasons or [] if r["impact"] < 0],
        "reasons_known": reasons is not None, "fields": fields,
    }


@router.get("/leads/{lead_id:path}")
async def lead_page(request: Request, lead_id: str) -> Response:
    board = board_of(request)
    model, _ = choose_model(request, board)
    if model is None:
        raise PageError(404, "no scores are recorded yet", "not_found")
    try:
        view = await run_in_threadpool(lead_view, board.store, model, lead_id,
                                       bundle_finder(request, model))
    except DataError as exc:
        raise PageError(404, str(exc), "not_found") from None
    return render(request, "lead.html", view)
