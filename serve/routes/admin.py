"""Model reload without a restart: the new model is verified before it replaces the old one."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from leadscore.errors import ModelError
from serve.deps import Authorized, HolderDep, SettingsDep
from serve.errors import ApiError
from serve.schemas import ErrorResponse, ReloadResult

router = APIRouter(tags=["admin"])


@router.post(
    "/v1/admin/reload",
    response_model=ReloadResult,
    responses={
        401: {"model": ErrorResponse, "description": "Missing or invalid API key"},
        409: {"model": ErrorResponse, "description": "New model refused; the old one serves on"},
    },
)
async def reload(holder: HolderDep, settings: SettingsDep, _: Authorized) -> ReloadResult:
    """Load the model URI again (checksum, smoke prediction, then an atomic swap). A model that
    fails verification is refused with 409 and the one already loaded keeps serving. With
    several workers this reaches one of them: use `LEADSCORE_RELOAD_SECONDS` there."""
    uri = settings.resolved_model_uri()
    previous = holder.loaded
    serving = previous.bundle.version if previous else None
    try:
        loaded = await run_in_threadpool(holder.load, uri, settings)
    except ModelError as exc:
        raise ApiError(409, "model_refused", f"new model refused: {exc}",
                       [{"still_serving": serving}]) from None
    return ReloadResult(status="reloaded", model=loaded.bundle.name,
                        version=loaded.bundle.version, previous_version=serving)
