"""Model reload without a restart: the new model is verified before it replaces the old one."""

from __future__ import annotations

import re

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from leadscore.errors import ModelError
from serve.deps import AdminAuthorized, ModelsDep, SettingsDep
from serve.errors import ApiError
from serve.schemas import ErrorResponse, ReloadResult

router = APIRouter(tags=["admin"])

# an absolute path (a bundle folder, a downloaded artifact): the server's layout is nobody's
# business over HTTP; the server log keeps the full message
_PATH = re.compile(r"(?<![\w:.])/[^\s:'\"()]+")


def without_paths(message: str) -> str:
    return _PATH.sub("<bundle>", message)


@router.post(
    "/v1/admin/reload",
    response_model=ReloadResult,
    responses={
        401: {"model": ErrorResponse, "description": "Missing or invalid API key"},
        404: {"model": ErrorResponse, "description": "No such model served"},
        409: {"model": ErrorResponse, "description": "New model refused; the old one serves on"},
    },
)
async def reload(
    models: ModelsDep,
    settings: SettingsDep,
    _: AdminAuthorized,
    model: str | None = Query(None, description="The model to reload (default: the default "
                              "model, or the only one served)."),
) -> ReloadResult:
    """Load a model's source again (checksum, format and input-field checks, smoke prediction,
    then an atomic swap). A model that fails is refused with 409 and the one already loaded
    keeps serving. With several workers this reaches one of them: use
    `LEADSCORE_RELOAD_SECONDS` there."""
    served = models.default_served() if model is None else models.get(model)
    holder = served.holder
    previous = holder.loaded
    serving = previous.bundle.version if previous else None
    try:
        loaded = await run_in_threadpool(holder.load, served.uri, settings)
    except ModelError as exc:
        offered = holder.offered
        what = f"{served.name} version {offered}" if offered else f"the new {served.name}"
        raise ApiError(409, "model_refused", f"{what} refused: {without_paths(str(exc))}",
                       [{"model": served.name, "still_serving": serving}]) from None
    return ReloadResult(status="reloaded", model=loaded.bundle.name,
                        version=loaded.bundle.version, previous_version=serving)
