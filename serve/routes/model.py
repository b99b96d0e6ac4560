"""What is being served: name, version, metrics, and the fields a lead may carry."""

from __future__ import annotations

from fastapi import APIRouter

from serve.deps import Authorized, HolderDep
from serve.schemas import ModelInfo

router = APIRouter(tags=["model"])


@router.get("/v1/model", response_model=ModelInfo)
def model_info(holder: HolderDep, _: Authorized) -> ModelInfo:
    bundle = holder.snapshot().bundle
    meta = bundle.meta
    return ModelInfo(
        name=bundle.name,
        version=bundle.version,
        uri=meta.get("uri"),
        trained_at=meta.get("trained_at"),
        dataset=meta.get("dataset"),
        split=meta.get("split"),
        metrics={k: float(v) for k, v in (meta.get("metrics") or {}).items() if v == v},
        tiers=meta.get("tiers") or {},
        id_field=bundle.id_column,
        features=bundle.input_types(),
    )
