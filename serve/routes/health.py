"""Liveness and readiness: open to all, so orchestrators need no key."""

from __future__ import annotations

from fastapi import APIRouter

from serve.deps import HolderDep
from serve.errors import ApiError

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(holder: HolderDep) -> dict[str, str]:
    """A model is loaded and can score (503 until then)."""
    loaded = holder.loaded
    if loaded is None:
        raise ApiError(503, "model_not_loaded", "no model is loaded yet",
                       [{"reason": holder.last_error or "starting"}])
    return {"status": "ready", "model": loaded.bundle.name, "version": loaded.bundle.version}
