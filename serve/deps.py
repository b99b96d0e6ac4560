"""Shared dependencies: settings, the model holder, and API-key auth, as `Annotated` aliases."""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import TypeAdapter

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
    lead: type[Any]
    leads: TypeAdapter[list[dict[str, Any]]]
    fingerprint: str = ""  # what the model source looked like when this was loaded
    loaded_at: float = 0.0


def prepare(bundle: ModelBundle, settings: Settings, fingerprint: str = "") -> Loaded:
    """Validators for `bundle`, after a smoke prediction proves the model can score a lead."""
    try:
        scores, _ = score_records(bundle, [{}], reasons=1)
    except Exception as exc:  # a model that cannot score one empty lead must not serve
        raise ModelError(f"model failed its smoke prediction ({type(exc).__name__})") from None
    if not all(0.0 <= p <= 1.0 and math.isfinite(p) for p in scores.probability):
        raise ModelError("model failed its smoke prediction (probability outside 0..1)")
    lead = lead_model(bundle, forbid_extra=not settings.ignore_unknown_fields)
    adapter: TypeAdapter[list[dict[str, Any]]] = TypeAdapter(list[lead])  # type: ignore[valid-type]
    return Loaded(bundle, lead, adapter, fingerprint, time.time())


SwapHook = Callable[[Loaded | None, Loaded], None]


def version_in(fingerprint: str) -> str | None:
    """The version a source fingerprint names (`registry:name:3:...`, `folder:3:sha`), if any:
    known even when the model itself turns out unloadable."""
    parts = fingerprint.split(":")
    if parts[0] == "registry" and len(parts) > 2:
        return parts[2]
    if parts[0] == "folder" and len(parts) > 1 and parts[1] not in ("None", "unreadable"):
        return parts[1]
    return None


def schema_hold(
    current: Loaded | None, bundle: ModelBundle, uri: str, settings: Settings
) -> str | None:
    """Why `bundle` must not replace the served model yet, or None. Callers send the served
    version's fields: a version that takes other fields (added, removed or retyped) is served
    only once it was promoted with `--allow-schema-change` (a registry tag, or the flag in a
    bundle folder's metadata)."""
    from leadscore.promotion import schema_change

    if current is None:
        return None
    served = current.bundle
    change = schema_change(served.input_types(), bundle.input_types())
    if not change:
        return None
    if bundle.meta.get("schema_change_allowed") or _allowed_in_registry(uri, bundle, settings):
        return None
    return (
        f"version {bundle.version} takes other input fields than the served version "
        f"{served.version} ({change.describe()}): held back until promoted with "
        f"leadscore promote {bundle.name} {bundle.version} --allow-schema-change"
    )


def _allowed_in_registry(uri: str, bundle: ModelBundle, settings: Settings) -> bool:
    if not uri.startswith("models:/"):
        return False
    from leadscore import tracking

    return tracking.schema_change_allowed(bundle.name, bundle.version, settings)


class ModelHolder:
    """Holds the serving model. A request takes one snapshot and finishes on it, so a reload
    (an atomic reference swap) never changes the model under an in-flight request."""

    def __init__(self, on_swap: SwapHook | None = None,
                 on_refused: Callable[[], None] | None = None, name: str = "") -> None:
        self.name = name  # the registered model this holder serves (its key in the app)
        self.loaded: Loaded | None = None
        self.last_error: str | None = None
        # a version the source points at that is held back, and why (e.g. a schema change)
        self.pending: dict[str, str] | None = None
        self.offered: str | None = None  # the version the last load attempt found, if known
        self._lock = threading.Lock()  # one reload at a time; readers never wait
        self._on_swap = on_swap
        self._on_refused = on_refused

    def snapshot(self) -> Loaded:
        loaded = self.loaded
        if loaded is None:
            raise ApiError(503, "model_not_loaded", "no model is loaded yet",
                           [{"reason": self.last_error or "starting"}])
        return loaded

    def load(self, uri: str, settings: Settings) -> Loaded:
        """Load, verify (checksum in `load_bundle`, smoke prediction here), then swap.

        Anything short of a verified model raises `ModelError` and leaves the old one serving.
        """
        from leadscore.tracking import load_model
        from serve.reload import source_fingerprint

        with self._lock:
            try:
                try:
                    fingerprint = source_fingerprint(uri, settings)
                    self.offered = version_in(fingerprint)
                    bundle = load_model(uri, settings)
                    held = schema_hold(self.loaded, bundle, uri, settings)
                    if held is not None:
                        self.pending = {"version": bundle.version, "reason": held}
                        raise ModelError(held)
                    loaded = prepare(bundle, settings, fingerprint)
                except ModelError:
                    raise
                except Exception as exc:  # whatever breaks, the old model keeps serving
                    kind = type(exc).__name__
                    raise ModelError(f"{uri}: model cannot be loaded ({kind})") from None
            except ModelError as exc:
                self.last_error = str(exc)
                if self._on_refused is not None:
                    self._on_refused()
                raise
            previous, self.loaded = self.loaded, loaded
            self.last_error = None
            self.pending = None
            if self._on_swap is not None:
                self._on_swap(previous, loaded)
        log.info("serving %s version %s", loaded.bundle.name, loaded.bundle.version)
        return loaded


# Dependencies are `async def` on purpose: they only read attributes, and FastAPI runs a plain
# `def` dependency in the thread pool, a thread hop per dependency per request.


async def get_models(request: Request) -> Any:
    return request.app.state.models  # serve.models.ModelSet (that module imports this one)


async def settings_dep(request: Request) -> Settings:
    settings: Settings = getattr(request.app.state, "settings", None) or get_settings()
    return settings


SettingsDep = Annotated[Settings, Depends(settings_dep)]
ModelsDep = Annotated[Any, Depends(get_models)]


def key_digests(settings: Settings, admin: bool = False) -> list[bytes]:
    """SHA-256 of each configured key: compared digest to digest, every comparison takes the
    same time whatever the length or content of what a caller sent. `admin`: the keys for
    /v1/admin/* (`LEADSCORE_ADMIN_KEYS`, else the API keys)."""
    keys = (settings.admin_key_list() or settings.api_key_list()) if admin else \
        settings.api_key_list()
    return [hashlib.sha256(key.encode()).digest() for key in keys]


async def require_key(request: Request) -> None:
    """`Authorization: Bearer <key>` or `X-API-Key: <key>`, checked in constant time against
    every configured key. No keys configured: open. Keys are never logged."""
    check_key(request)


async def require_admin_key(request: Request) -> None:
    """The admin routes: `LEADSCORE_ADMIN_KEYS` when set (a scoring key is not enough to swap
    the model under every caller), else the API keys."""
    check_key(request, admin=True)


def check_key(request: Request, admin: bool = False) -> None:
    digests: list[bytes] = (request.app.state.admin_key_digests if admin
                            else request.app.state.key_digests)
    if not digests:
        return
    offered = []
    for name, value in request.scope["headers"]:  # raw headers: no Headers object to build
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            offered.append(value[7:].strip())
        elif name == b"x-api-key":
            offered.append(value.strip())
    matched = False
    for candidate in offered:
        if candidate:
            supplied = hashlib.sha256(candidate).digest()
            for digest in digests:
                matched |= hmac.compare_digest(supplied, digest)
    if not matched:
        kind = "admin key (LEADSCORE_ADMIN_KEYS)" if admin and \
            request.app.state.settings.admin_key_list() else "API key"
        raise ApiError(401, "unauthorized", f"missing or invalid {kind}: send "
                       "'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                       headers={"WWW-Authenticate": 'Bearer realm="leadscore"'})


Authorized = Annotated[None, Depends(require_key)]
AdminAuthorized = Annotated[None, Depends(require_admin_key)]


@dataclass(frozen=True)
class Scoring:
    """What the scoring route needs from the app."""

    models: Any  # serve.models.ModelSet
    settings: Settings
    metrics: Any
    limiter: Any  # anyio.CapacityLimiter: how many worker threads score at once


def scoring_context(request: Request) -> Scoring:
    """The caller is authorised (else 401), and the app's holder, settings and metrics.

    Called directly by the scoring route rather than through `Depends`: each FastAPI
    dependency costs ~15 µs a request, a real share of a single-lead request.
    """
    check_key(request)
    state = request.app.state
    return Scoring(state.models, state.settings, state.metrics, state.score_limiter)
