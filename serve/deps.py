"""Shared dependencies: settings, the model holder, and API-key auth, as `Annotated` aliases."""

from __future__ import annotations

import hmac
import logging
import math
import threading
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from pydantic import BaseModel, TypeAdapter

from leadscore.config import Settings, get_settings
from leadscore.errors import ModelError
from leadscore.scoring import ModelBundle, score_records
from serve.errors import ApiError
from serve.schemas import lead_model

log = logging.getLogger("serve")


@dataclass(frozen=True)
class Loaded:
    """A model and the validators generated from it: swapped together, read as one snapshot."""

    bundle: ModelBundle
    lead: type[BaseModel]
    leads: TypeAdapter[list[BaseModel]]


def prepare(bundle: ModelBundle, settings: Settings) -> Loaded:
    """Validators for `bundle`, after a smoke prediction proves the model can score a lead."""
    scores, _ = score_records(bundle, [{}], reasons=1)
    if not all(0.0 <= p <= 1.0 and math.isfinite(p) for p in scores.probability):
        raise ModelError("model failed its smoke prediction (probability outside 0..1)")
    lead = lead_model(bundle, forbid_extra=not settings.ignore_unknown_fields)
    return Loaded(bundle, lead, TypeAdapter(list[lead]))  # type: ignore[valid-type]


class ModelHolder:
    """Holds the serving model. A request takes one snapshot and finishes on it, so a reload
    (an atomic reference swap) never changes the model under an in-flight request."""

    def __init__(self) -> None:
        self.loaded: Loaded | None = None
        self.last_error: str | None = None
        self._lock = threading.Lock()  # one reload at a time; readers never wait

    def snapshot(self) -> Loaded:
        loaded = self.loaded
        if loaded is None:
            raise ApiError(503, "model_not_loaded", "no model is loaded yet",
                           [{"reason": self.last_error or "starting"}])
        return loaded

    def load(self, uri: str, settings: Settings) -> Loaded:
        """Load, verify (checksum in `load_bundle`, smoke prediction here), then swap."""
        from leadscore.tracking import load_model

        with self._lock:
            try:
                loaded = prepare(load_model(uri, settings), settings)
            except ModelError as exc:
                self.last_error = str(exc)
                raise
            self.loaded = loaded
            self.last_error = None
        log.info("serving %s version %s", loaded.bundle.name, loaded.bundle.version)
        return loaded


def get_holder(request: Request) -> ModelHolder:
    holder: ModelHolder = request.app.state.holder
    return holder


def settings_dep(request: Request) -> Settings:
    settings: Settings = getattr(request.app.state, "settings", None) or get_settings()
    return settings


SettingsDep = Annotated[Settings, Depends(settings_dep)]
HolderDep = Annotated[ModelHolder, Depends(get_holder)]


def require_key(request: Request, settings: SettingsDep) -> None:
    """Bearer token or X-API-Key, compared in constant time against every configured key."""
    keys = settings.api_key_list()
    if not keys:
        return
    supplied = request.headers.get("x-api-key", "")
    auth = request.headers.get("authorization", "")
    if not supplied and auth[:7].lower() == "bearer ":
        supplied = auth[7:].strip()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(supplied.encode(), key.encode())
    if not matched:
        raise ApiError(401, "unauthorized", "missing or invalid API key",
                       headers={"WWW-Authenticate": 'Bearer realm="leadscore"'})


Authorized = Annotated[None, Depends(require_key)]
