"""GET /v1/leads/{id}/history: a lead's scorings, trend and why its score last changed, from the
score history (`leadscore.store`), explained with each version's own bundle."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from leadscore.errors import DataError, LeadscoreError, ModelError
from leadscore.history import lead_history
from leadscore.scoring import ModelBundle
from leadscore.store import ScoreStore
from serve.deps import Authorized, ModelsDep, SettingsDep
from serve.errors import ApiError
from serve.schemas import ErrorResponse

router = APIRouter(tags=["history"])

RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No history for this lead or model"},
}


@router.get("/v1/leads/{lead_id}/history", responses=RESPONSES)
def lead_history_route(lead_id: str, request: Request, models: ModelsDep,
                       settings: SettingsDep, _: Authorized,
                       model: str | None = None) -> dict[str, Any]:
    """The lead's scorings by `model` (default: the default served model, else the only
    model with a history), oldest first; its trend (the rule is in `trend_rule`); and, between
    its last two scorings, the fields whose impact moved, as the lead's data or the model."""
    store = ScoreStore.of(settings)
    name = model or (models.default if models.default in store.models() else None)
    cache: dict[tuple[str, str], ModelBundle] = request.app.state.history_bundles

    def bundle_for(version: str) -> ModelBundle:
        from leadscore.tracking import load_model

        key = (str(name), version)
        if key not in cache:
            served = models.models.get(name)
            loaded = served.holder.loaded if served is not None else None
            if loaded is not None and loaded.bundle.version == version:
                cache[key] = loaded.bundle
            elif not version.isdigit():
                raise ModelError(f"version {version!r} of {name} is not a registered version")
            else:
                cache[key] = load_model(f"models:/{name}/{version}", settings)
        return cache[key]

    try:
        name = store.resolve_model(name)
        return lead_history(store, name, lead_id, bundle_for)
    except DataError as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except LeadscoreError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None
