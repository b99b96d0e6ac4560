"""What is being served: every model (name, version, input fields, metrics), one model, or the
default one, and a version held back from serving (and why)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from serve.deps import Authorized, Loaded, ModelsDep
from serve.models import ModelSet, Served
from serve.schemas import ErrorResponse, ModelInfo, ModelList

router = APIRouter(tags=["model"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such model served"},
}


def describe(served: Served, models: ModelSet) -> ModelInfo:
    loaded: Loaded | None = served.holder.loaded
    pending = served.holder.pending
    if loaded is None:
        return ModelInfo(name=served.name, version=None, loaded=False, uri=served.uri,
                         default=served.name == models.default, pending=pending,
                         error=served.holder.last_error)
    bundle = loaded.bundle
    meta = bundle.meta
    return ModelInfo(
        name=served.name,
        version=bundle.version,
        loaded=True,
        default=served.name == models.default,
        uri=meta.get("uri"),
        trained_at=meta.get("trained_at"),
        dataset=meta.get("dataset"),
        split=meta.get("split"),
        metrics={k: float(v) for k, v in (meta.get("metrics") or {}).items() if v == v},
        tiers=meta.get("tiers") or {},
        tier_words=bundle.tier_words_,
        labels={s: w.label for s, w in zip(bundle.sources, bundle.words_, strict=True)},
        id_field=bundle.id_column,
        features=bundle.input_types(),
        pending=pending,
    )


@router.get("/v1/models", response_model=ModelList)
def list_models(models: ModelsDep, _: Authorized) -> ModelList:
    """Every served model: name, version, input fields, test metrics, pending version."""
    return ModelList(default=models.default,
                     models=[describe(s, models) for s in models.models.values()])


@router.get("/v1/models/{name}", response_model=ModelInfo, responses=NOT_FOUND)
def model_by_name(name: str, models: ModelsDep, _: Authorized) -> ModelInfo:
    """One served model; `pending` names a version its alias points at that is held back
    (e.g. its input fields differ and it was not promoted with --allow-schema-change)."""
    return describe(models.get(name), models)


@router.get("/v1/model", response_model=ModelInfo, responses=NOT_FOUND)
def model_info(models: ModelsDep, _: Authorized) -> ModelInfo:
    """The default model (the one `POST /v1/score` uses)."""
    served = models.default_served()
    served.holder.snapshot()  # 503 while it is not loaded
    return describe(served, models)
