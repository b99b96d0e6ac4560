"""`GET /models/{name}`: the model page for sales ops (what the score means, how well it counted
on the test slice and since, tiers, calibration plot, fields that matter, baselines, history).

The figures come from `leadscore.modelpage`; this module only draws the calibration plot as
inline SVG (no chart library, nothing from a CDN) and renders the template.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from leadscore import modelpage
from leadscore.config import Settings
from leadscore.scoring import ModelBundle
from serve.errors import ApiError
from serve.pages.auth import require_page_user
from serve.pages.rendering import render

log = logging.getLogger("serve")


model_router = APIRouter(include_in_schema=False,
                         dependencies=[Depends(require_page_user)])

# the calibration plot's drawing area, in SVG user units
PLOT = {"width": 360, "height": 300, "left": 48, "right": 12, "top": 12, "bottom": 40}


def served_bundle(request: Request, name: str) -> ModelBundle:
    """The bundle a served model answers with now; ApiError 404 (unknown) or 503 (not loaded)."""
    models = request.app.state.models
    return models.get(name).holder.snapshot().bundle  # type: ignore[no-any-return]


def error_page(request: Request, error: ApiError) -> Response:
    """An HTML page for a model the server does not serve (404) or has not loaded (503)."""
    return render(request, "model.html", {"error": error.message, "page": None, "plot": None},
                  status=error.status)


def calibration_plot(bins: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Points of the reliability diagram (mean predicted vs observed conversion per bin, sized
    by leads) in SVG coordinates, with the diagonal and the axis ticks; None with no bins."""
    shown = [b for b in bins if b.get("leads") and b.get("predicted") is not None
             and b.get("observed") is not None]
    if not shown:
        return None
    width, height = PLOT["width"], PLOT["height"]
    x0, x1 = PLOT["left"], width - PLOT["right"]
    y0, y1 = height - PLOT["bottom"], PLOT["top"]
    top = max(1e-9, max(max(b["predicted"], b["observed"]) for b in shown))
    scale = min(1.0, (int(top * 10) + 1) / 10)  # zoom to the occupied range, in tenths

    def x(value: float) -> float:
        return round(x0 + (x1 - x0) * min(value, scale) / scale, 1)

    def y(value: float) -> float:
        return round(y0 - (y0 - y1) * min(value, scale) / scale, 1)

    most = max(b["leads"] for b in shown)
    points = [{
        "cx": x(b["predicted"]), "cy": y(b["observed"]),
        "r": round(3 + 7 * (b["leads"] / most) ** 0.5, 1),
        "title": (f"{b['leads']:,} leads scored {b['bin_low']:.0%}-{b['bin_high']:.0%}: "
                  f"predicted {b['predicted']:.1%}, converted {b['observed']:.1%}"),
    } for b in shown]
    ticks = [round(scale * i / 5, 4) for i in range(6)]
    return {
        "width": width, "height": height, "x0": x0, "x1": x1, "y0": y0, "y1": y1,
        "diagonal": {"x1": x(0), "y1": y(0), "x2": x(scale), "y2": y(scale)},
        "line": " ".join(f"{p['cx']},{p['cy']}" for p in points),
        "points": points,
        "xticks": [{"at": x(t), "text": f"{t:.0%}"} for t in ticks],
        "yticks": [{"at": y(t), "text": f"{t:.0%}"} for t in ticks],
    }


def gather_page(bundle: ModelBundle, settings: Settings) -> modelpage.ModelPage:
    """The page's figures: the bundle's own, the registry's history, the last monitor report
    (blocking: MLflow and files, so callers run it in a worker thread)."""
    versions, note = modelpage.registry_versions(bundle.name, settings)
    report = modelpage.read_monitor(settings.resolved_reports_dir(), bundle.name)
    return modelpage.gather(bundle, versions=versions, monitor_report=report,
                            versions_note=note)


@model_router.get("/models/{name}", response_class=HTMLResponse)
async def model_page(request: Request, name: str) -> Response:
    """The model page (HTML)."""
    try:
        bundle = served_bundle(request, name)
    except ApiError as exc:
        return error_page(request, exc)
    settings: Settings = request.app.state.settings
    page = await run_in_threadpool(gather_page, bundle, settings)
    return render(request, "model.html", {
        "page": page, "plot": calibration_plot(page.calibration),
        "not_recorded": modelpage.NOT_RECORDED, "error": None,
    })

