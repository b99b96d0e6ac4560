"""Model reload without a restart: the new model is verified before it replaces the old one."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from leadscore.errors import ModelError
from serve.deps import Authorized, HolderDep, SettingsDep
from serve.errors import ApiError

router = APIRouter(tags=["admin"])


@router.post("/v1/admin/reload")
async def reload(request: Request, holder: HolderDep, settings: SettingsDep, _: Authorized) -> dict[str, str]:
    """Reload the model URI; a model that fails verification is refused and the old one stays."""
    uri = settings.resolved_model_uri()
    previous = holder.loaded
    try:
        loaded = await run_in_threadpool(holder.load, uri, settings)
    except ModelError as exc:
        serving = previous.bundle.version if previous else None
        raise ApiError(409, "model_refused", str(exc), [{"still_serving": serving}]) from None
    request.app.openapi_schema = None  # the request schema follows the model's fields
    return {"status": "reloaded", "model": loaded.bundle.name, "version": loaded.bundle.version}
