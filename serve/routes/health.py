"""Liveness and readiness: open to all, so orchestrators need no key."""

from __future__ import annotations

from fastapi import APIRouter

from serve.deps import ModelsDep
from serve.errors import ApiError

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(models: ModelsDep) -> dict[str, object]:
    """Every served model is loaded and can score (503 until then). `model` and `version` name
    the default model; `models` maps each served model to its version."""
    waiting = [s for s in models.models.values() if s.holder.loaded is None]
    if not models.models or waiting:
        details = [{"model": s.name, "reason": s.holder.last_error or "starting"}
                   for s in waiting] or [{"reason": models.note or "starting"}]
        raise ApiError(503, "model_not_loaded", "no model is loaded yet" if not models.models
                       or len(waiting) == len(models.models)
                       else f"model(s) not loaded yet: {', '.join(s.name for s in waiting)}",
                       details)
    versions = {name: s.holder.loaded.bundle.version for name, s in models.models.items()}
    body: dict[str, object] = {"status": "ready", "models": versions}
    if models.default is not None:
        body.update(model=models.default, version=versions[models.default])
    return body
